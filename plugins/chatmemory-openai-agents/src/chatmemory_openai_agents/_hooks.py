"""Run hooks that tell a session which agent and model each model call used."""

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
    model call, so the session opens the run's history with the driving model and stamps
    each assistant message with the model that produced it.
    """

    def __init__(self, recorder: Recorder, run_for: Callable[[RunContextWrapper[Any]], RunRecord]) -> None:
        self._recorder = recorder
        self._run_for = run_for

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        """Open the run's history at its first model call and record the input it waited on."""
        await self._recorder.model_called(self._run_for(context), agent, system_prompt)

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        """Note which model produced the items of ``response``."""
        self._recorder.model_answered(self._run_for(context), agent, response)
