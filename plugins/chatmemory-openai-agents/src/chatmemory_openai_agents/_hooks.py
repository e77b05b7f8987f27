"""Run hooks that tell a session which agent and model each model call used, and when a run ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents import Agent, ModelResponse, RunContextWrapper, RunHooks, Tool
from agents.items import TResponseInputItem
from agents.lifecycle import AgentHooksBase, RunHooksBase
from agents.run_context import AgentHookContext

from chatmemory_openai_agents._record import Recorder, RunRecord

__all__ = ["ChatMemoryHooks", "WithOwnHooks", "with_own_hooks"]


class ChatMemoryHooks(RunHooks[Any]):
    """The ``hooks=`` half of a ``ChatMemorySession`` (its ``hooks`` attribute).

    A session alone never sees the agent or its model; these hooks report both at every
    model call, so the session records the run's driving model and instructions and stamps
    each assistant message with the model that produced it. They also report the run's
    final output, after which the session closes the run's history as ``completed``.
    """

    def __init__(
        self,
        recorder: Recorder,
        run_for: Callable[[RunContextWrapper[Any]], RunRecord],
        run_starting: Callable[[RunContextWrapper[Any], Agent[Any]], RunRecord | None],
        run_ending: Callable[[RunContextWrapper[Any]], RunRecord | None],
    ) -> None:
        self._recorder = recorder
        self._run_for = run_for
        self._run_starting = run_starting
        self._run_ending = run_ending

    async def on_agent_start(self, context: AgentHookContext[Any], agent: Agent[Any]) -> None:
        """Note the run's first agent: its model and instructions are the run's until a model
        call names them."""
        run = self._run_starting(context, agent)
        if run is not None:
            await self._recorder.agent_started(run, agent)

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        """Note the model and instructions; the first call's are the run's."""
        await self._recorder.model_called(self._run_for(context), agent, system_prompt)

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        """Note which model produced the items of ``response``."""
        self._recorder.model_answered(self._run_for(context), agent, response)

    async def on_agent_end(self, context: RunContextWrapper[Any], agent: Agent[Any], output: Any) -> None:
        """The run has its final output: its history closes once the last items are written."""
        run = self._run_ending(context)
        if run is not None:
            self._recorder.agent_ended(run)


class WithOwnHooks(RunHooks[Any]):
    """A session's hooks and the caller's own ``RunHooks``, for ``ChatMemorySession.run``: each
    event goes to the session's hooks first, then to the caller's."""

    def __init__(self, session: RunHooksBase[Any, Any], own: RunHooksBase[Any, Any]) -> None:
        self.session = session
        self.own = own

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        await self.session.on_llm_start(context, agent, system_prompt, input_items)
        await self.own.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        await self.session.on_llm_end(context, agent, response)
        await self.own.on_llm_end(context, agent, response)

    async def on_agent_start(self, context: AgentHookContext[Any], agent: Agent[Any]) -> None:
        await self.session.on_agent_start(context, agent)
        await self.own.on_agent_start(context, agent)

    async def on_agent_end(self, context: AgentHookContext[Any], agent: Agent[Any], output: Any) -> None:
        await self.session.on_agent_end(context, agent, output)
        await self.own.on_agent_end(context, agent, output)

    async def on_handoff(
        self, context: RunContextWrapper[Any], from_agent: Agent[Any], to_agent: Agent[Any]
    ) -> None:
        await self.session.on_handoff(context, from_agent, to_agent)
        await self.own.on_handoff(context, from_agent, to_agent)

    async def on_tool_start(self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool) -> None:
        await self.session.on_tool_start(context, agent, tool)
        await self.own.on_tool_start(context, agent, tool)

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool, result: object
    ) -> None:
        await self.session.on_tool_end(context, agent, tool, result)
        await self.own.on_tool_end(context, agent, tool, result)


def with_own_hooks(session: ChatMemoryHooks, own: object) -> RunHooks[Any]:
    """The hooks a ``ChatMemorySession.run`` passes to the SDK when its caller passes ``own``.

    Raises:
        TypeError: ``own`` is not a ``RunHooks`` (agent hooks go on the agent: ``Agent(hooks=...)``).
    """
    if own is None or own is session:
        return session
    if isinstance(own, AgentHooksBase):
        raise TypeError(
            f"hooks= takes RunHooks, not agent hooks ({type(own).__name__}): "
            "attach those to the agent with Agent(..., hooks=...)"
        )
    if not isinstance(own, RunHooksBase):
        raise TypeError(f"hooks= takes RunHooks, not {type(own).__name__}")
    return WithOwnHooks(session, own)
