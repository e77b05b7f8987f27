"""Recording one pydantic-ai run into one chatmemory history, message by message, as it goes."""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar
from uuid import UUID

import anyio
from pydantic import JsonValue
from pydantic_ai import messages as pai

from chatmemory import ChatMemoryError, NewMessage, recording
from chatmemory.recording import LIVE_HISTORIES
from chatmemory.scope import Scope
from chatmemory_pydantic_ai._convert import system_prompts, to_new_messages

__all__ = ["RECORDING", "RunRecord", "settled"]

T = TypeVar("T")
_BATCH = 100
_RUN_KEY_CHARS = 200  # of the store's 255 for a key, the rest being ``:`` and the message's index

RECORDING: set[str] = set()
"""The run ids of the runs this process is recording. A run is in it before its history exists
(which ``LIVE_HISTORIES`` cannot say), so a concurrent run never takes that history, just
started, for one a dead run left open."""
ERROR_CHARS = 10_000


async def settled(write: Coroutine[Any, Any, T]) -> T:
    """Await a store write to its end even when the caller is cancelled meanwhile, so a
    cancelled run never leaves a write half-known; the cancellation then goes on."""
    # Shielded: under a cancelled anyio scope every await would be cancelled again.
    with anyio.CancelScope(shield=True):
        result = await recording.settled(write)
    return result


@dataclass
class RunRecord:
    """What one run has recorded: its history and the messages stored."""

    chat: Scope
    conversation_id: UUID | str
    run_id: str
    model: str
    metadata: dict[str, JsonValue]
    given: list[str]
    """The system prompts of the history the run was given."""
    history_id: UUID | None = None
    started_at: datetime | None = None
    """When the history started: its place among the conversation's histories."""
    recorded: list[pai.ModelMessage] = field(default_factory=list)
    """The run's messages stored, in order: the very objects, which a history processor may
    drop from the run's history, rebuild or change in place."""
    _recorded_ids: set[int] = field(default_factory=set)
    prompts: list[str] = field(default_factory=list)
    failure: ChatMemoryError | None = None

    def __post_init__(self) -> None:
        RECORDING.add(self.run_id)

    def own(self, live: Sequence[pai.ModelMessage]) -> list[pai.ModelMessage]:
        """The run's own messages in ``live``, in order: the run appends them after the
        history it was given, so only the end of a long conversation is looked at. Messages
        without a run id among them (a history processor's additions, sent to the model but
        not part of any run) are passed over."""
        start = len(live)
        while start > 0 and live[start - 1].run_id in (self.run_id, None):
            start -= 1
        return [m for m in live[start:] if m.run_id == self.run_id]

    def _stored(self, message: pai.ModelMessage) -> bool:
        # By identity, or by value for a copy a history processor made of a stored message.
        return id(message) in self._recorded_ids or message in self.recorded

    def _mark(self, batch: Sequence[pai.ModelMessage]) -> None:
        self.recorded.extend(batch)
        self._recorded_ids.update(id(m) for m in batch)

    async def commit(self, live: Sequence[pai.ModelMessage], *, hold_answer: bool = False) -> None:
        """Store the run's messages in ``live`` not stored yet; the first ones start the history
        in the same transaction. With ``hold_answer`` a final response that calls no tool is left
        for the next write (the run's end, or the request retrying it).

        Raises:
            ChatMemoryError: the store refused them; the run then fails with this error.
        """
        batch, prompts = self._unstored(live)
        if hold_answer and batch and _is_answer(batch[-1]):
            batch = batch[:-1]
        if not batch:
            return
        try:
            await settled(self._write(batch, prompts))
        except ChatMemoryError as exc:
            self.failure = exc
            raise

    def _unstored(self, live: Sequence[pai.ModelMessage]) -> tuple[list[pai.ModelMessage], list[str]]:
        """The run's messages in ``live`` not stored yet, and the run's system prompts.

        pydantic-ai adds a run's messages at the end: those after the newest one stored. One
        before it that is not stored is a copy of a stored message a processor rebuilt changed
        (old tool output trimmed, say), already stored as it first was.
        """
        own = self.own(live)
        start = len(own)
        while start > 0 and not self._stored(own[start - 1]):
            start -= 1
        return own[start:], system_prompts(own, own, given=self.given)

    def _new(self, batch: Sequence[pai.ModelMessage]) -> list[NewMessage]:
        done = len(self.recorded)
        run = _key_of(self.run_id)
        new = to_new_messages(batch, keys=[f"{run}:{done + i}" for i in range(len(batch))])
        return [recording.fitted(message, self.chat.limits) for message in new]  # kept whole natively

    async def _write(self, batch: list[pai.ModelMessage], prompts: list[str]) -> None:
        new = self._new(batch)
        size = self.chat.limits.batch_size(_BATCH)
        if self.history_id is None:
            started = await self.chat.start_run(
                self.conversation_id,
                model=self.model,
                messages=new[:size],
                system_prompts=prompts,
                metadata=self.metadata,
            )
            self.history_id, self.started_at = started.history.id, started.history.created_at
            LIVE_HISTORIES.add(started.history.id)
            self._mark(batch[:size])
            batch, new = batch[size:], new[size:]
        elif prompts != self.prompts:
            await self.chat.update_history(self.history_id, system_prompts=prompts)
        self.prompts = prompts
        for start in range(0, len(new), size):
            await self.chat.append_messages(self.history_id, new[start : start + size])
            self._mark(batch[start : start + size])

    async def finish(
        self,
        status: Literal["completed", "failed", "cancelled"],
        *,
        usage: Mapping[str, Any] | None,
        error: str | None = None,
        live: Sequence[pai.ModelMessage] = (),
    ) -> None:
        """Close the history, storing the run's messages in ``live`` not stored yet in the same
        transaction (the history starts in it too when the run stored nothing before).

        Raises:
            ChatMemoryError: the store refused the messages (the history is then closed
                ``failed`` without them, saying why) or the close.
        """
        batch, prompts = self._unstored(live) if self.failure is None else ([], self.prompts)
        try:
            try:
                await settled(self._close(batch, prompts or self.given, status, usage, error))
            except ChatMemoryError as exc:
                if not batch:
                    raise
                self.failure = exc
                await settled(self._close([], self.prompts or self.given, status, usage, error))
                raise
        finally:
            RECORDING.discard(self.run_id)
            if self.history_id is not None:
                LIVE_HISTORIES.discard(self.history_id)

    async def _close(
        self,
        batch: list[pai.ModelMessage],
        prompts: list[str],
        status: Literal["completed", "failed", "cancelled"],
        usage: Mapping[str, Any] | None,
        error: str | None,
    ) -> None:
        size = self.chat.limits.batch_size(_BATCH)
        if len(batch) > size:
            await self._write(batch[:-size], prompts)
            batch = batch[-size:]
        if self.failure is not None:
            cut = min(ERROR_CHARS, self.chat.limits.content)
            status, error = "failed", f"messages not recorded: {self.failure}"[:cut]
        new = self._new(batch)
        if self.history_id is None:
            recorded = await self.chat.record_run(
                self.conversation_id,
                model=self.model,
                messages=new,
                status=status,
                usage=usage,
                error=error,
                system_prompts=prompts,
                metadata=self.metadata,
            )
            self.history_id, self.started_at = recorded.history.id, recorded.history.created_at
        else:
            if prompts != self.prompts:
                await self.chat.update_history(self.history_id, system_prompts=prompts)
            await self.chat.finish_run(self.history_id, messages=new, status=status, usage=usage, error=error)
        self.prompts = prompts
        self._mark(batch)


def _key_of(run_id: str) -> str:
    """What names run ``run_id`` in its messages' keys: the id itself, or a digest of one too long
    for a key to hold (a run id is the caller's, or a durable engine's made of the caller's)."""
    return recording.key_text(run_id, _RUN_KEY_CHARS)


def _is_answer(message: pai.ModelMessage) -> bool:
    """A response calling no tool: pydantic-ai checks it as the run's output, then ends the run
    (or retries it with a request saying why)."""
    return isinstance(message, pai.ModelResponse) and not message.tool_calls
