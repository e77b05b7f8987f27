"""Run hooks that tell a session which agent and model each model call used, and when a run ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents import Agent, ModelResponse, RunContextWrapper, RunHooks
from agents.items import TResponseInputItem

from chatmemory_openai_agents._record import Recorder, RunRecord

__all__ = ["ChatMemoryHooks"]


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
        run_ending: Callable[[RunContextWrapper[Any]], RunRecord | None],
    ) -> None:
        self._recorder = recorder
        self._run_for = run_for
        self._run_ending = run_ending

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
