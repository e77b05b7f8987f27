"""One Agents SDK run recorded as one chatmemory history."""

from __future__ import annotations

import asyncio
import copy
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from agents import Agent, ModelResponse, RunConfig, RunContextWrapper
from agents.items import TResponseInputItem
from agents.models import get_default_model
from agents.version import __version__ as agents_version

from chatmemory import History, NewMessage
from chatmemory.scope import Scope
from chatmemory_openai_agents._items import NATIVE_FORMAT, content_of, item_identity, role_of
from chatmemory_openai_agents._models import resolve_model_name

__all__ = ["FRAMEWORK", "Recorder", "RunRecord"]

FRAMEWORK = "openai-agents"
_BATCH = 1000  # the store's default cap on messages per append call
_ERROR_CHARS = 10_000


@dataclass(eq=False)
class RunRecord:
    """What is known about one run while it is recorded.

    The history opens at the first model call, when the model and the instructions are
    known; items the SDK saves before that (the run's input) wait in ``pending``.
    """

    run_config: RunConfig | None = None
    agent: Agent[Any] | None = None
    wrapper: weakref.ref[RunContextWrapper[Any]] | None = None
    history: History | None = None
    model: str | None = None
    agent_name: str | None = None
    pending: list[TResponseInputItem] = field(default_factory=list)
    produced: dict[str, tuple[str, str]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Recorder:
    """Writes runs of one conversation through a principal's scope."""

    def __init__(self, chat: Scope, conversation_id: UUID | str, metadata: Mapping[str, Any]) -> None:
        self.chat = chat
        self.conversation_id = conversation_id
        self.metadata = dict(metadata)

    async def model_called(self, run: RunRecord, agent: Agent[Any], system_prompt: str | None) -> None:
        """A model call starts: open the history on the first one and write what waited."""
        run.model = resolve_model_name(agent, run.run_config)
        run.agent_name = agent.name
        async with run.lock:
            if run.history is None:
                await self._open(run, run.model, agent.name, system_prompt)
            await self._flush(run)

    def model_answered(self, run: RunRecord, agent: Agent[Any], response: ModelResponse) -> None:
        """Remember which model and agent produced each output item of ``response``."""
        producer = (resolve_model_name(agent, run.run_config), agent.name)
        for output in response.output:
            key = item_identity(output)
            if key is not None:
                run.produced[key] = producer

    async def add(self, run: RunRecord, items: Sequence[TResponseInputItem]) -> None:
        """Record items of a run, or keep them until its history opens."""
        async with run.lock:
            run.pending.extend(copy.deepcopy(list(items)))
            if run.history is not None:
                await self._flush(run)

    async def finish(self, run: RunRecord, error: BaseException | None) -> None:
        """Close the run's history: completed, or failed/cancelled with ``error``.

        A run that failed before its first model call still gets a history for its input.
        """
        async with run.lock:
            if run.history is None and run.pending and run.agent is not None:
                instructions = run.agent.instructions
                run.model = resolve_model_name(run.agent, run.run_config)
                run.agent_name = run.agent.name
                prompt = instructions if isinstance(instructions, str) else None
                await self._open(run, run.model, run.agent_name, prompt)
            await self._flush(run)
            if run.history is None:
                return
            status, message = _outcome(error)
            await self.chat.finish_history(run.history.id, status=status, usage=_usage(run), error=message)

    async def add_outside_run(self, items: Sequence[TResponseInputItem], model: str | None) -> None:
        """Record items that belong to no run as a history of their own."""
        run = RunRecord(model=model or get_default_model(), pending=copy.deepcopy(list(items)))
        try:
            await self._flush(run)
        except BaseException as error:
            if run.history is not None:
                await self.finish(run, error)
            raise
        await self.finish(run, None)

    def forget_histories(self, history_ids: set[UUID], runs: Sequence[RunRecord]) -> None:
        """Runs whose history was deleted open a new one at their next write."""
        for run in runs:
            if run.history is not None and run.history.id in history_ids:
                run.history = None

    async def _open(
        self, run: RunRecord, model: str, agent_name: str | None, system_prompt: str | None
    ) -> None:
        metadata: dict[str, Any] = {
            **self.metadata,
            "framework": FRAMEWORK,
            "framework_version": agents_version,
        }
        if agent_name:
            metadata["agent"] = agent_name
        run.history = await self.chat.start_history(
            self.conversation_id,
            model=model,
            system_prompts=[system_prompt] if system_prompt else None,
            metadata=metadata,
        )

    async def _flush(self, run: RunRecord) -> None:
        if run.history is None and run.model is not None:
            await self._open(run, run.model, run.agent_name, None)
        if run.history is None or not run.pending:
            return
        batch, run.pending = run.pending, []
        messages = [self._message(run, item) for item in batch]
        for start in range(0, len(messages), _BATCH):
            await self.chat.append_messages(run.history.id, messages[start : start + _BATCH])

    def _message(self, run: RunRecord, item: TResponseInputItem) -> NewMessage:
        raw: Mapping[str, Any] = item
        role = role_of(raw)
        content = content_of(raw) or ""
        native = {"format": NATIVE_FORMAT, "data": dict(raw)}
        if role != "assistant":
            return NewMessage(role, content, native=native)
        key = item_identity(raw)
        model, agent_name = run.produced.get(key or "", (run.model, run.agent_name))
        metadata = {"agent": agent_name} if agent_name else None
        return NewMessage(role, content, model=model, metadata=metadata, native=native)


def _outcome(
    error: BaseException | None,
) -> tuple[Literal["completed", "failed", "cancelled"], str | None]:
    if error is None:
        return "completed", None
    text = f"{type(error).__name__}: {error}"[:_ERROR_CHARS]
    if isinstance(error, asyncio.CancelledError):
        return "cancelled", text
    return "failed", text


def _usage(run: RunRecord) -> dict[str, int] | None:
    wrapper = run.wrapper() if run.wrapper is not None else None
    if wrapper is None:
        return None
    usage = wrapper.usage
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
