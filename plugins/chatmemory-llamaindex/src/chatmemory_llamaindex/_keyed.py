"""Chat-store keys as conversations of one principal, and how messages become histories.

A key names one conversation of the scope's principal: the conversation whose metadata
holds that key, else the conversation whose id the key is (so an existing conversation can
be opened by id); writing to a key that names neither starts a conversation for it, with an
id derived from the key (see ``_claim``).

Recording: each LlamaIndex workflow run (an agent's ``run``) that writes to a key is one
history, whatever the roles of its messages (CodeAct's code results are user messages); the
first write of the next run closes it as that run ended (``completed``, ``failed`` with its
error, ``cancelled``). Messages written outside any run fall back to roles: a user message
that follows a non-user message starts a new history, closing the one before it. An
assistant message's model is the one LlamaIndex instrumentation saw produce it, else that of
its run's latest LLM call (ReAct and CodeAct store replies rebuilt from text), else the
store's default; the history takes the first observed model and system prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from llama_index.core.llms import ChatMessage, MessageRole

from chatmemory import (
    ChatMemoryError,
    ConflictError,
    Conversation,
    ConversationNotFound,
    History,
    HistoryNotFound,
    InvalidInputError,
    Message,
    MessageNotFound,
    NewMessage,
    Scope,
)
from chatmemory.loops import AnyLoopLock
from chatmemory.mirror import Handouts, Mirrored, Mirrors
from chatmemory.recording import abandoned, fitted, model_label, recorded_here, recorder_metadata, restored
from chatmemory_llamaindex._claim import claim, generation_of, key_id, live
from chatmemory_llamaindex._convert import from_stored, to_new_message
from chatmemory_llamaindex._provenance import Ended, Produced, observe

__all__ = ["KEY_FIELD", "RUN_FIELD", "UNANSWERED", "KeyedConversations"]

KEY_FIELD = "llamaindex_key"
"""The conversation metadata field holding the chat-store key it was started for."""

RUN_FIELD = "llamaindex_run"
"""The history metadata field holding the span id of the LlamaIndex workflow run it records."""

UNANSWERED = "the run stored no reply: it raised, was stopped, or its process ended"
"""The error of a run closed by a later one, when how it ended was not seen and it stored
no reply."""

T = TypeVar("T")

_PAGE = 100  # conversations per listing call, fewer if the store takes fewer
_ATTEMPTS = 20  # reads of a key whose message at a position other writers keep deleting first
# Messages per append call, well under the store's default cap (1,000): LlamaIndex hands a
# store any number at once (a whole key to ``set_messages``, a key rewritten by an insertion).
_BATCH = 500
# Conversations whose messages are kept between reads (the most recently read ones).
_MIRRORED = 128


@dataclass
class _Run:
    history_id: UUID
    last_role: str | None  # None: not known (a history this object did not write)
    observed: bool  # the history's model came from an observed LLM call
    span: str | None  # the workflow run it records (RUN_FIELD), None for writes outside one
    watched: bool = False  # this object watches ``span``'s end (and releases it on closing)


class KeyedConversations:
    """The operations both chat stores share, all async, on the home loop's engine."""

    def __init__(self, chat: Scope, *, model: str, metadata: Mapping[str, Any] | None) -> None:
        self.chat = chat
        self.model = model_label(model) or model
        # The adapter's own keys come last: it knows its histories, and the process recording
        # each, by them.
        self.metadata = {**(metadata or {}), **recorder_metadata(), "framework": "llamaindex"}
        self._ids: dict[str, UUID] = {}
        # The generation of each key this object started (see ``_claim``): those before it are
        # deleted, so the key's next conversation is looked for from there, not from the first.
        self._generations: dict[str, int] = {}
        self._runs: dict[UUID, _Run] = {}  # the run each conversation was last written by
        # The last seq this object wrote in each conversation; a write that does not follow it
        # shows the conversation was written elsewhere meanwhile (``_elsewhere``).
        self._last_seq: dict[UUID, int] = {}
        self._elsewhere: set[UUID] = set()
        # Runs set aside while their workflow run was still going, another run writing the
        # conversation meanwhile: their later writes rejoin them.
        self._waiting: dict[UUID, list[_Run]] = {}
        self._provenance = observe()
        # One keeps two writers from starting two conversations for one new key, the other
        # makes each change of a key (read, then written) whole to the other callers of this
        # object; calls may run on several loops (see chatmemory.loops).
        self._resolving = AnyLoopLock()
        self._writing = AnyLoopLock()
        self._mirrors: Mirrors[Message] = Mirrors(list, _MIRRORED)
        # The LlamaIndex messages ``messages`` hands out, each handed out again while unchanged.
        self._handouts: Handouts[Message, ChatMessage] = Handouts(from_stored, from_stored, _MIRRORED)

    # -- keys ------------------------------------------------------------------------------

    async def _lookup(self, key: str) -> UUID | None:
        """The conversation ``key`` names, its generation remembered when one is found by listing."""
        if await live(self.chat, key_id(self.chat.principal, key)):
            return key_id(self.chat.principal, key)
        # A later generation of the key, a conversation started for it by an earlier version
        # of this adapter (the oldest, should there be several), or one opened by its id.
        found: list[Conversation] = []
        cursor: str | None = None
        while True:
            page = await self.chat.list_conversations(
                limit=self.chat.limits.page_size(_PAGE), cursor=cursor, archived=None
            )
            found += [c for c in page.items if c.metadata.get(KEY_FIELD) == key]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        if found:
            first = min(found, key=lambda c: (c.created_at, c.id))
            generation = generation_of(first.metadata)
            if generation is not None and key_id(self.chat.principal, key, generation) == first.id:
                self._generations[key] = generation
            return first.id
        try:
            return (await self.chat.get_conversation(UUID(key))).id
        except (ValueError, ConversationNotFound):
            return None

    async def conversation_id(self, key: str, *, create: bool) -> UUID | None:
        """The conversation ``key`` names; a new one when it names none and ``create``."""
        if not isinstance(key, str) or not key:
            raise InvalidInputError("key", "must be a non-empty string")
        async with self._resolving:
            if key not in self._ids:
                start = self._generations.get(key)
                hinted = None if start is None else key_id(self.chat.principal, key, start)
                found = hinted if hinted is not None and await live(self.chat, hinted) else None
                if found is None:  # another store may have started the key again since
                    found = await self._lookup(key)
                if found is None:
                    if not create:
                        return None
                    start = self._generations.get(key, 0)
                    found, self._generations[key] = await claim(self.chat, key, {KEY_FIELD: key}, start)
                self._ids[key] = found
            return self._ids[key]

    async def on_key(
        self, key: str, action: Callable[[UUID], Awaitable[T]], *, create: bool, missing: T
    ) -> T:
        """``action`` on the conversation of ``key`` (``missing`` when it has none), resolving
        the key again once if its conversation was deleted meanwhile."""
        for attempt in (1, 2):
            cid = await self.conversation_id(key, create=create)
            if cid is None:
                return missing
            try:
                return await action(cid)
            except ConversationNotFound:
                self._forget(key)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _forget(self, key: str) -> None:
        self._handouts.forget(key)
        cid = self._ids.pop(key, None)
        if cid is not None:
            self._runs.pop(cid, None)
            self._waiting.pop(cid, None)
            self._last_seq.pop(cid, None)
            self._elsewhere.discard(cid)

    async def keys(self) -> list[str]:
        """Every conversation of the principal as a key, oldest first."""
        found = []
        cursor: str | None = None
        while True:
            page = await self.chat.list_conversations(
                limit=self.chat.limits.page_size(_PAGE), cursor=cursor, archived=None
            )
            found += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        found.sort(key=lambda c: (c.created_at, c.id))
        keys = []
        for conversation in found:
            key = conversation.metadata.get(KEY_FIELD)
            keys.append(key if isinstance(key, str) else str(conversation.id))
        return keys

    # -- reading ---------------------------------------------------------------------------

    async def stored(self, key: str) -> list[Message]:
        """The stored messages of ``key`` in order (none for an unknown key)."""

        async def read(cid: UUID) -> list[Message]:
            return list((await self.whole(cid)).values)

        return await self.on_key(key, read, create=False, missing=[])

    async def whole(self, cid: UUID) -> Mirrored[Message]:
        """Every live message of conversation ``cid`` in order, and the conversation, from one
        snapshot. The messages read before are kept and reused once one small read proves them
        current, so a read of a long conversation costs what changed since the last one (see
        ``chatmemory.mirror``); they are never handed to LlamaIndex, only converted.

        Raises:
            ConversationNotFound: the conversation is not visible (or was deleted).
        """
        return await self._mirrors.read_whole(self.chat, cid)

    async def messages(self, key: str) -> list[ChatMessage]:
        """The messages of ``key`` as LlamaIndex messages, in order: each a message of the
        caller's, made once and handed out again while it is unchanged (``Handouts``)."""
        return self._handouts.hand_out(await self.stored(key), key)

    # -- writing ---------------------------------------------------------------------------

    async def alone(self, change: Callable[[], Awaitable[T]]) -> T:
        """Run ``change`` while no other change made through this object runs.

        LlamaIndex changes a key by position (``delete_last_message``, ``idx=``, the archive
        watermark of ``Memory``): each such change reads the key, then writes, and two of
        them interleaved would both act on the same message. Some write in two steps (an
        insertion rewrites the key, an archived add moves the watermark after it), so reads
        of the key run alone too, and never see half a change. For the same reason a change
        whose caller is cancelled once it began runs to its end before the cancel goes on
        (one still waiting for its turn is dropped).
        """
        began = False

        async def locked() -> T:
            nonlocal began
            async with self._writing:
                began = True
                return await change()

        running = asyncio.ensure_future(locked())
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            if not began:
                running.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await running
            raise

    async def append(self, key: str, messages: Sequence[ChatMessage]) -> None:
        """Record ``messages`` after the last message of ``key``."""
        if messages:
            await self.on_key(key, lambda cid: self._append(cid, messages), create=True, missing=None)

    async def _append(self, cid: UUID, messages: Sequence[ChatMessage]) -> None:
        span = self._provenance.current_run()
        latest = self._runs.get(cid) or await self._open_run(cid)
        run = latest
        # Runs writing one key at once interleave: a run goes back to its own history.
        own = next((r for r in self._waiting.get(cid, []) if r.span == span), None) if span else None
        if own is not None:
            run = own
        last_role = run.last_role if run is not None else None
        # Split into runs: within a workflow run all of one write joins one history; outside
        # one, a user message after a non-user one opens the next run.
        segments: list[tuple[bool, list[NewMessage], Produced | None]] = []
        for message in messages:
            produced = self._provenance.produced(message)
            if produced is None and span is not None and message.role == MessageRole.ASSISTANT:
                produced = self._provenance.latest_call(span)
            new = self._new_message(message, produced)
            if not segments:
                segments.append((self._opens(run, span, new.role), [], None))
            elif span is None and new.role == "user" and last_role != "user":
                segments.append((True, [], None))
            opens, batch, seen = segments[-1]
            batch.append(new)
            if seen is None and produced is not None and new.role == "assistant":
                segments[-1] = (opens, batch, produced)
            last_role = new.role
        for opens, batch, seen in segments:
            if opens or run is None:
                previous, run = run, await self._record_run(cid, batch, span)
                self._runs[cid] = run
                if previous is not None:
                    await self._set_aside(cid, previous)
            else:
                written = await self._extend(run.history_id, batch)
                if written < len(batch):
                    # Closed or deleted by another writer: the rest starts a run of its own.
                    run = await self._record_run(cid, batch[written:], span)
            run.last_role = batch[-1].role
            if run.span is None and span is not None:
                run.span = span  # a history begun outside any run, taken on by this run
                self._provenance.watch(span)
                run.watched = True
            if seen is not None and not run.observed:
                await self.chat.update_history(
                    run.history_id, model=seen.model, system_prompts=seen.system_prompts or None
                )
                run.observed = True
            self._runs[cid] = run
        if own is not None:
            waiting = self._waiting.get(cid, [])
            if own in waiting:
                waiting.remove(own)
            if latest is not None:
                await self._set_aside(cid, latest)

    @staticmethod
    def _opens(run: _Run | None, span: str | None, role: str) -> bool:
        """Whether a write from workflow run ``span`` (``None``: outside one) whose first
        message has ``role`` opens a history after ``run``."""
        if run is None:
            return True
        if span is not None and run.span is not None:
            return span != run.span
        return role == "user" and run.last_role != "user"

    async def _set_aside(self, cid: UUID, run: _Run) -> None:
        """``run`` is no longer the conversation's latest: kept open while its workflow run
        still goes on, else closed, as are the runs kept before whose workflow runs ended."""
        waiting = self._waiting.setdefault(cid, [])
        closed = True
        if run.span is not None and self._provenance.running(run.span):
            waiting.append(run)
        else:
            closed = await self._close(run)
        if not closed or cid in self._elsewhere:
            # Another store object (or process) wrote the key since this one's last run (and
            # may have closed that run): runs it left running behind this one's may have ended.
            self._elsewhere.discard(cid)
            await self._close_ended_elsewhere(cid)
        for done in [r for r in waiting if not self._provenance.running(r.span or "")]:
            waiting.remove(done)
            await self._close(done)
        if not waiting:
            del self._waiting[cid]

    async def _close(self, run: _Run) -> bool:
        """Close ``run``'s history as its workflow run ended; whether it was still running (not
        closed or deleted by another writer). One written outside any run is completed; one
        whose end this process did not see (another process's, or forgotten) is completed if
        it stored a reply, failed (``UNANSWERED``) if not."""
        ended = self._provenance.ended(run.span) if run.span is not None else None
        try:
            if ended is None and run.span is None:
                ended = Ended("completed")
            elif ended is None:
                last_role = run.last_role or await self._last_role(run.history_id)
                ended = Ended("completed") if last_role != "user" else Ended("failed", UNANSWERED)
            await self.chat.finish_history(run.history_id, status=ended.status, error=ended.error)
            closed = True
        except (ConflictError, HistoryNotFound, ConversationNotFound):
            closed = False  # closed or deleted elsewhere already: nothing left to close
        if run.watched and run.span is not None:
            self._provenance.release(run.span)
            run.watched = False
        return closed

    async def _last_role(self, history_id: UUID) -> str | None:
        page = await self.chat.list_messages(history_id=history_id, newest_first=True, limit=1)
        return page.items[0].role if page.items else None

    def _new_message(self, message: ChatMessage, produced: Produced | None) -> NewMessage:
        """What stores ``message``: kept whole natively, its content cut to the store's limits."""
        new = to_new_message(message, model=produced.model if produced is not None else None)
        return fitted(new, self.chat.limits)

    async def _open_run(self, cid: UUID) -> _Run | None:
        """The conversation's last history, when it is a run this adapter left running
        (another store object's, or an earlier process's); another framework's run in
        progress is never joined. This adapter's other running histories were left by runs
        a later one followed (two runs at once, then the store object dropped or its process
        ended): each is closed, unless its run still goes on in this process."""
        histories = (await self.chat.get_conversation(cid)).histories
        ours = [_run_of(h, self.model) for h in histories if _running_ours(h)]
        last = ours[-1] if ours and ours[-1].history_id == histories[-1].id else None
        for run in ours:
            if run is not last and not self._provenance.running(run.span or ""):
                await self._close(run)
        return last

    async def _close_ended_elsewhere(self, cid: UUID) -> None:
        """Close the runs other store objects left running in the conversation that are known
        to have ended: their workflow run ended in this process, or the process that recorded
        them did (on this host). A run another live process is recording is left to it, as is
        one this process's other objects write outside any workflow run (nothing tells its
        end: its own object closes it by its roles). Best effort, after this object's write: a
        conversation or history deleted meanwhile has nothing left to close."""
        mine = {r.history_id for r in (self._runs.get(cid), *self._waiting.get(cid, [])) if r is not None}
        with contextlib.suppress(ConversationNotFound):
            for history in (await self.chat.get_conversation(cid)).histories:
                if history.id in mine or not _running_ours(history):
                    continue
                span = _run_field(history.metadata)
                if span is not None and self._provenance.running(span):
                    continue
                ended_here = span is not None and self._provenance.ended(span) is not None
                gone = not recorded_here(history) and abandoned(history, framework="llamaindex")
                if ended_here or gone:
                    await self._close(_run_of(history, self.model))

    async def _record_run(
        self, cid: UUID, batch: list[NewMessage], span: str | None = None, **metadata: Any
    ) -> _Run:
        """A new history holding ``batch``, recording workflow run ``span`` (if one); when the
        batch is refused, no history is left.

        Raises:
            ConflictError: other writers kept closing each new history before its first
                messages, many times over.
        """
        for _ in range(_ATTEMPTS):
            if span is not None:
                metadata[RUN_FIELD] = span
            history = await self.chat.start_history(
                cid, model=self.model, metadata={**self.metadata, **metadata}
            )
            try:
                written = await self._extend(history.id, batch)
            except BaseException:
                with contextlib.suppress(ChatMemoryError):
                    await self.chat.delete_history(history.id)
                raise
            if written == len(batch):
                if span is not None:
                    self._provenance.watch(span)
                return _Run(history.id, None, False, span, watched=span is not None)
            # Another store took the new history for a run left running, and closed or deleted
            # it to start its own: the rest goes to another, this one dropped if empty.
            batch = batch[written:]
            if not written:
                with contextlib.suppress(ChatMemoryError):
                    if not (await self.chat.get_history(history.id)).messages:
                        await self.chat.delete_history(history.id)
        raise ConflictError(f"conversation {cid}: other writers kept closing its new histories; retry")

    async def _extend(self, history_id: UUID, batch: list[NewMessage]) -> int:
        """Append ``batch`` to a running history, in calls the store takes; how many of its
        messages were appended before the history was found closed or deleted (all of them
        when it was not)."""
        size = self.chat.limits.batch_size(_BATCH)
        for start in range(0, len(batch), size):
            try:
                stored = await self.chat.append_messages(history_id, batch[start : start + size])
            except (ConflictError, HistoryNotFound):
                return start
            cid = stored[0].conversation_id
            if self._last_seq.get(cid, stored[0].seq - 1) != stored[0].seq - 1:
                self._elsewhere.add(cid)
            self._last_seq[cid] = stored[-1].seq
        return len(batch)

    async def replace(self, key: str, messages: Sequence[ChatMessage | Message]) -> None:
        """Make ``messages`` the whole content of ``key``, recorded as one finished history
        (stored messages keep their model and native form)."""
        batch = [
            restored(m) if isinstance(m, Message) else self._new_message(m, self._provenance.produced(m))
            for m in messages
        ]

        async def act(cid: UUID) -> None:
            # The new content is stored before the old is deleted, so a refused batch
            # changes nothing.
            old = (await self.chat.get_conversation(cid)).histories
            if batch:
                run = await self._record_run(cid, batch, replaced=True)
                with contextlib.suppress(ConflictError):  # closed by another writer: as good
                    await self.chat.finish_history(run.history_id)
            for history in old:
                await self.chat.delete_history(history.id)
            self._runs.pop(cid, None)
            self._waiting.pop(cid, None)

        await self.on_key(key, act, create=True, missing=None)

    async def insert(self, key: str, index: int, messages: Sequence[ChatMessage]) -> None:
        """Put ``messages`` before position ``index`` of ``key`` (at the end when ``index`` is
        past it); an insertion before the end rewrites the key as one history."""
        stored = await self.stored(key)
        if index >= len(stored):
            await self.append(key, messages)
            return
        at = max(0, index + len(stored) if index < 0 else index)
        await self.replace(key, [*stored[:at], *messages, *stored[at:]])

    async def delete_at(
        self, key: str, index: int, *, stored: list[Message] | None = None
    ) -> ChatMessage | None:
        """Delete the message at ``index`` (negative counts from the end) and return it;
        ``None`` when there is no such message.

        Without ``stored`` the key is read here, and read again when another store deleted
        the message first, so each message is deleted and returned by one caller only.

        Raises:
            MessageNotFound: the message at ``index`` of ``stored`` was deleted meanwhile.
            ConflictError: other writers deleted the message at ``index`` first, many times over.
        """
        for _ in range(_ATTEMPTS):
            current = await self.stored(key) if stored is None else stored
            if not -len(current) <= index < len(current):
                return None
            victim = current[index]
            try:
                await self.chat.delete_message(victim.id)
            except MessageNotFound:
                if stored is not None:
                    raise
                continue
            return from_stored(victim)
        raise ConflictError(f"key {key!r}: could not delete the message at {index}; retry")

    async def drop(self, key: str) -> list[ChatMessage] | None:
        """Delete the conversation of ``key`` and return its messages (``None`` if it has none)."""

        async def act(cid: UUID) -> list[ChatMessage]:
            stored = await self.chat.transcript(cid)
            await self.chat.delete_conversation(cid)
            return [from_stored(m) for m in stored]

        dropped = await self.on_key(key, act, create=False, missing=None)
        self._forget(key)
        return dropped


def _running_ours(history: History) -> bool:
    """Whether ``history`` is a running history this adapter recorded."""
    return history.status == "running" and (history.metadata or {}).get("framework") == "llamaindex"


def _run_of(history: History, default_model: str) -> _Run:
    """A running history of this adapter, as a run this object did not write."""
    return _Run(history.id, None, history.model != default_model, _run_field(history.metadata))


def _run_field(metadata: Mapping[str, Any] | None) -> str | None:
    span = (metadata or {}).get(RUN_FIELD)
    return span if isinstance(span, str) else None
