"""Recording one agent run as one chatmemory history (async; the middleware only routes calls here)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from chatmemory import (
    ChatMemoryError,
    ConflictError,
    History,
    HistoryDetail,
    HistoryNotFound,
    Limits,
    Message,
    NewMessage,
)
from chatmemory.recording import (
    ABANDONED,
    LIVE_HISTORIES,
    abandoned,
    added_metadata,
    fitted,
    model_label,
    recorder_metadata,
    restored,
    run_error,
    settled,
    starting,
    starting_in,
)
from chatmemory.scope import Scope
from chatmemory_langchain._convert import (
    from_stored_many,
    model_name_of,
    produced_by,
    to_new_message,
)

# Well under chatmemory's default per-call limit, so a long first recording still fits.
_BATCH = 200
_FIRST_PAGE = 8  # a run or two of this process, usually all that is new: read (and decode) no more
_PAGE = 50
_ERROR_CHARS = 2000
_SUMMARY_SOURCE = "summarization"  # additional_kwargs["lc_source"] of SummarizationMiddleware's summaries
_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")
NO_MODEL = "unknown"
"""The model of a run that called none (a guardrail answered before the model): no model
produced its messages."""
PENDING_RESULT = "The tool call has no result yet: the run that made it is still going."
"""What a run loading the conversation sees for a tool call a run still going has not answered."""


@dataclass
class Run:
    """What one agent invocation has recorded so far."""

    known: set[str]
    """LangChain ids of the messages already stored in the conversation."""
    before: frozenset[str] = frozenset()
    """Ids of messages the thread held before its newest stored one when the run began: not
    the run's, and never recorded by it (their history was deleted from the store)."""
    history_id: UUID | None = None
    written: dict[str, tuple[UUID, BaseMessage | None, NewMessage]] = field(default_factory=dict)
    """The messages this run appended to its running history, in order, by LangChain id: the
    stored message's id, the LangChain message (``None`` when read back: a paused run resumed
    through another middleware object) and what stores it."""
    usage: dict[str, int] = field(default_factory=dict)
    opening: dict[str, Any] | None = None
    """How to start the history (model, system prompts, metadata), noted at the first model call."""


class Recorder:
    """Turns the moments of an agent run into chatmemory calls on one conversation."""

    def __init__(
        self, chat: Scope, conversation_id: UUID | str, *, metadata: Mapping[str, Any] | None, autoload: bool
    ) -> None:
        self.chat = chat
        self.conversation_id = conversation_id
        self.metadata = added_metadata(metadata)
        self.autoload = autoload
        self._seen = _Seen()

    async def begin(
        self, messages: Sequence[BaseMessage], *, thread: str | None = None, resuming: str | None = None
    ) -> tuple[Run, list[BaseMessage] | None]:
        """Start a run. Returns it, and the stored conversation followed by ``messages`` when
        the graph state does not hold it already: the state's messages from then on (``None``
        when nothing is to load).

        Raises:
            ConversationNotFound: the conversation is not visible to the scope's principal.
        """
        stored, histories, known = await self._conversation(resuming)
        run = Run(known=known)
        held = [i for i, m in enumerate(messages) if m.id in known]
        if held:
            run.before = frozenset(m.id for m in messages[: held[-1]] if m.id)
        # A checkpointer's thread (``thread``) holds the conversation once it holds a stored
        # message: never load it twice. Without one, the state is what the caller sent: the
        # user messages before its newest message not stored (or, every one stored, those it
        # ends with) are its input, which holds nothing, stored or not (a client sending a turn
        # again with the same ids); a stored message before them holds the conversation.
        holds = bool(held)
        if holds and thread is None:
            new = [i for i, m in enumerate(messages) if m.id not in known]
            boundary = new[-1] if new else len(messages)
            while boundary and isinstance(messages[boundary - 1], HumanMessage):
                boundary -= 1
            holds = held[0] < boundary
        if not self.autoload or not stored or holds:
            return run, None
        # As LangGraph's ``add_messages`` does: an input message with a stored one's id takes
        # its place.
        given: dict[str | None, BaseMessage] = {m.id: m for m in messages if m.id}
        loaded = [given.pop(m.id, m) for m in _close_running(stored, histories, self._seen.status, run.known)]
        return run, [*loaded, *(m for m in messages if m.id in given or not m.id)]

    async def resume(self, messages: Sequence[BaseMessage], thread_id: str | None) -> Run:
        """Continue the run a thread paused through another middleware object (an interrupt
        resumed through another agent object or process): the history of the newest stored
        message the thread holds, when it is a running history of the thread. It then names
        this process as the one recording it; the thread's running histories are not taken
        for ones left behind meanwhile (the pausing process may have exited)."""
        run, _ = await self.begin(messages, thread=thread_id, resuming=thread_id)
        paused = await self._claim(thread_id, messages)
        if paused is not None:
            run.history_id = paused.id
            for message in paused.messages or []:
                # The usage of the calls before the pause, and the messages a middleware may
                # still change (a redaction after the model call that paused).
                _add_usage(run, message.usage if message.role == "assistant" else None)
                if message.key is not None:
                    run.written[message.key] = (message.id, None, restored(message, key=message.key))
        return run

    async def _claim(self, thread_id: str | None, messages: Sequence[BaseMessage]) -> HistoryDetail | None:
        """The paused run's history (see ``resume``), read just now with its messages. Neither a
        sub-agent's history (its messages are not in the thread) nor one another run of the
        thread left running (a newer run's messages, or its input, follow its) is taken."""
        if thread_id is None:
            return None
        seen = self._seen
        history_of = dict(zip((m.id for m in seen.messages), seen.histories, strict=True))
        at = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].id in history_of), None)
        if at is None or any(isinstance(m, HumanMessage) for m in messages[at + 1 :]):
            # Nothing stored, or an input stored nowhere after the newest stored message: the
            # paused run began after it and stored nothing yet (paused before its first model
            # call); that message's history is an older run's.
            return None
        newest = history_of[messages[at].id]
        try:
            paused = await self.chat.get_history(newest)
        except HistoryNotFound:
            return None
        metadata = dict(paused.metadata or {})
        if paused.status != "running" or not _of_thread(metadata, thread_id):
            return None
        here = recorder_metadata()
        if any(metadata.get(k) != v for k, v in here.items()):
            try:
                await self.chat.update_history(paused.id, metadata={**metadata, **here})
            except (ConflictError, HistoryNotFound):
                return None  # closed or deleted meanwhile: the rest of the run starts its own
        LIVE_HISTORIES.add(paused.id)
        return paused

    async def open(
        self, run: Run, model: object | None, system_prompt: str | None, thread_id: str | None
    ) -> None:
        """Note the run's driving model and system prompt at its first model call (or, with
        no ``model``, at the end of a run that called none): its history starts with the
        first messages recorded."""
        if run.history_id is not None or run.opening is not None:
            return
        metadata: dict[str, Any] = {"framework": "langchain", **recorder_metadata()}
        if thread_id is not None:
            metadata["thread_id"] = thread_id
        run.opening = {
            "model": NO_MODEL if model is None else model_label(model_name_of(model)) or type(model).__name__,
            "system_prompts": [system_prompt] if system_prompt else None,
            # The adapter's own keys last: it knows its runs (and their processes) by them.
            "metadata": {**self.metadata, **metadata},
        }

    async def record(self, run: Run, messages: Sequence[BaseMessage]) -> None:
        """Append the messages not stored yet, in their order (the first ones start the history
        in the same transaction).

        Seen through to its end when the caller is cancelled meanwhile, so the run knows the
        history its first messages started.

        Raises:
            ChatMemoryError: the store refused the messages (e.g. ``InvalidInputError`` for one
                over its limits); the run's history is then closed ``failed``, saying why.
        """
        if run.history_id is None and run.opening is None:
            return
        try:
            await settled(self._write(run, _unknown(run, messages), messages))
        except ChatMemoryError as exc:
            await settled(self._refused(run, exc))
            raise

    async def finish(
        self,
        run: Run,
        status: Literal["completed", "failed", "cancelled"],
        error: BaseException | None = None,
        *,
        messages: Sequence[BaseMessage] = (),
    ) -> None:
        """Close the run's history, appending the messages not stored yet in the same
        transaction (nothing to do when no model was ever called). Seen through to its end
        when the caller is cancelled meanwhile: a run cancelled while it closes stays closed."""
        try:
            await settled(self._finish(run, status, error, messages))
        except ChatMemoryError as exc:
            await settled(self._refused(run, exc))
            raise

    async def _finish(
        self,
        run: Run,
        status: Literal["completed", "failed", "cancelled"],
        error: BaseException | None,
        messages: Sequence[BaseMessage],
    ) -> None:
        new = _unknown(run, messages)
        if run.history_id is None and (run.opening is None or not new):
            run.opening = None
            return
        size = self.chat.limits.batch_size(_BATCH)
        head, last = new[:-size] if len(new) > size else [], new[-size:]
        await self._write(run, head, messages)
        _count_usage(run, last)
        text = _error_text(error, self.chat.limits)
        batch = self._new(last)
        history_id, run.history_id = run.history_id, None
        opening, run.opening = run.opening, None
        try:
            if history_id is None:
                assert opening is not None
                recorded = await self.chat.record_run(
                    self.conversation_id,
                    messages=batch,
                    status=status,
                    usage=run.usage or None,
                    error=text,
                    **opening,
                )
                history_id = recorded.history.id
            else:
                await self.chat.finish_run(
                    history_id, messages=batch, status=status, usage=run.usage or None, error=text
                )
        except ChatMemoryError:
            # Refused (or not closed): the run is still open, for the caller to close failed.
            run.history_id, run.opening = history_id, opening
            raise
        finally:
            if history_id is not None:
                LIVE_HISTORIES.discard(history_id)
        run.known.update(m.id for m in last if m.id)
        run.written.clear()
        self._seen.status[history_id] = status

    async def _refused(self, run: Run, error: ChatMemoryError) -> None:
        """Close the run's history ``failed``, saying which error refused its messages; the
        refusal itself is what the run raises, so a failing close is not reported."""
        text = f"messages not recorded: {error}"[: min(_ERROR_CHARS, self.chat.limits.content)]
        history_id, run.history_id = run.history_id, None
        opening, run.opening = run.opening, None
        try:
            if history_id is not None:
                await self.chat.finish_run(
                    history_id, messages=[], status="failed", usage=run.usage or None, error=text
                )
            elif opening is not None:
                recorded = await self.chat.record_run(
                    self.conversation_id,
                    messages=[],
                    status="failed",
                    usage=run.usage or None,
                    error=text,
                    **opening,
                )
                history_id = recorded.history.id
        except ChatMemoryError:
            pass
        finally:
            if history_id is not None:
                LIVE_HISTORIES.discard(history_id)
        if history_id is not None:
            self._seen.status[history_id] = "failed"

    def _new(self, messages: Sequence[BaseMessage]) -> list[NewMessage]:
        """What stores ``messages``: each kept whole natively, its content cut to the limits."""
        return [fitted(to_new_message(m), self.chat.limits) for m in messages]

    async def _write(self, run: Run, new: list[BaseMessage], state: Sequence[BaseMessage]) -> None:
        """Append ``new`` to the run's history (the first ones start it), after storing again
        the run's messages that ``state`` holds changed."""
        await self._rewrite_changed(run, state)
        size = self.chat.limits.batch_size(_BATCH)
        for start in range(0, len(new), size):
            chunk = new[start : start + size]
            batch = self._new(chunk)
            if run.history_id is None:
                assert run.opening is not None
                with starting(self.conversation_id):
                    started = await self.chat.start_run(self.conversation_id, messages=batch, **run.opening)
                    run.history_id = started.history.id
                    LIVE_HISTORIES.add(started.history.id)
                stored = started.messages
            else:
                stored = await self.chat.append_messages(run.history_id, batch)
            run.known.update(m.id for m in chunk if m.id)
            for message, written, row in zip(chunk, batch, stored, strict=True):
                if message.id:
                    run.written[message.id] = (row.id, message, written)
            _count_usage(run, chunk)

    async def _rewrite_changed(self, run: Run, state: Sequence[BaseMessage]) -> None:
        """Store again the run's messages that ``state`` holds changed under their ids (a
        middleware that rewrites the answer after the model, or tool results before the next
        call, as ``PIIMiddleware`` redacts them): the run's messages from the first changed one
        on are replaced by their current versions as the conversation's newest, in one
        transaction. When another writer added messages after them, they are left as written."""
        if not run.written or run.history_id is None:
            return
        held: dict[str | None, BaseMessage] = {}
        for message in reversed(state):  # the run's own messages are the newest ones
            if message.id in run.written:
                held[message.id] = message
                if len(held) == len(run.written):
                    break
        order = list(run.written.items())
        changed = next(
            (
                at
                for at, (key, (_, message, written)) in enumerate(order)
                if (now := held.get(key)) is not None
                and now is not message
                # as handed to the store: it fills in what it was not given (a model)
                and self._new([now])[0].native != written.native
            ),
            None,
        )
        if changed is None:
            return
        tail = [(key, held.get(key, message), written) for key, (_, message, written) in order[changed:]]
        batch = [written if key not in held else self._new([held[key]])[0] for key, _, written in tail]
        try:
            stored = await self.chat.replace_messages(
                self.conversation_id,
                replacing=[run.written[key][0] for key, _, _ in tail],
                history_id=run.history_id,
                messages=batch,
            )
        except ConflictError:
            return
        for (key, current, _), written, row in zip(tail, batch, stored, strict=True):
            run.written[key] = (row.id, current, written)

    async def _conversation(
        self, resuming: str | None = None
    ) -> tuple[list[BaseMessage], list[UUID], set[str]]:
        """The stored conversation and its LangChain ids: read whole once, then only the
        messages stored since the newest one read (whole again when that one is gone, or when
        a message read was pending: completing it changes nothing at the newest end)."""
        seen = self._seen  # concurrent runs share it: build the next one, then swap it in
        incremental = seen.loaded and not seen.pending
        newer = await _newer(self.chat, self.conversation_id, seen.last) if incremental else None
        if newer is None:
            rows = await self.chat.transcript(self.conversation_id)
            base, known = [], set()
        else:
            rows, base, known = newer, seen.messages, seen.known
        status = dict(seen.status) if newer is not None else {}
        await self._close_abandoned(rows, status, whole=newer is None, sparing=resuming)
        added = from_stored_many(rows)
        for message, row in zip(added, rows, strict=True):
            # Stored without a LangChain id (e.g. by ChatMemoryHistory): LangGraph would give it
            # a random one in the state, and every run would store it again.
            message.id = message.id or str(row.id)
        known.update(m.id for m in added if m.id)
        last = (rows[-1].seq, rows[-1].id) if rows else seen.last if newer is not None else None
        # Read incrementally, ``rows`` follow messages none of which was pending.
        pending = any(m.status == "pending" for m in rows)
        before = seen if newer is not None else _Seen()
        histories = before.histories + [m.history_id for m in rows]
        # Whether each history's messages are together so far, followed from the rows read, so
        # that a turn checks only what it read.
        grouped, started = before.grouped, before.started
        if rows:
            started = set(started)  # a copy: the _Seen it came from stays as concurrent runs read it
            previous = before.histories[-1] if before.histories else None
            for history in histories[len(before.histories) :]:
                if history != previous:
                    grouped = grouped and history not in started
                    started.add(history)
                    previous = history
        self._seen = _Seen(
            messages=base + added,
            histories=histories,
            grouped=grouped,
            started=started,
            known=known,
            last=last,
            status=status,
            pending=pending,
            loaded=True,
        )
        if grouped:
            return self._seen.messages, histories, known
        return (*_by_history(self._seen.messages, histories), known)

    async def _close_abandoned(
        self, rows: Sequence[Message], status: dict[UUID, str], *, whole: bool, sparing: str | None = None
    ) -> None:
        """Fail the running histories among ``rows``' whose recording process is gone, but for
        those of the thread ``sparing`` (being resumed). Read in part (not ``whole``), the
        histories read as running before and not recorded here are read again too: a run ends
        without a message when it fails, is cancelled or its process dies."""
        unknown = {m.history_id for m in rows} - {h for h, s in status.items() if s != "running"}
        if not whole:
            unknown |= {h for h, s in status.items() if s == "running" and h not in LIVE_HISTORIES}
        if not unknown:
            return
        histories: list[History] = []
        if whole:
            histories = list((await self.chat.get_conversation(self.conversation_id)).histories)
        else:
            for hid in sorted(unknown):
                try:
                    histories.append(await self.chat.get_history(hid, messages=False))
                except HistoryNotFound:
                    status[hid] = "deleted"  # with its messages: none of them is read again
        # Read before the histories are judged: a run of this process that started one after
        # the read above has registered it as live by the time it is no longer counted here.
        started = starting_in(self.conversation_id)
        for history in histories:
            status[history.id] = history.status
            spared = sparing is not None and _of_thread(history.metadata or {}, sparing)
            if not spared and not (started and _mine(history)) and abandoned(history, framework="langchain"):
                try:
                    await self.chat.finish_history(history.id, status="failed", error=ABANDONED)
                except ConflictError:
                    continue  # its run ended after the read above: it was not abandoned
                status[history.id] = "failed"


def _by_history(messages: list[BaseMessage], histories: list[UUID]) -> tuple[list[BaseMessage], list[UUID]]:
    """``messages`` (in ``seq`` order, each of the history at the same place in ``histories``)
    with each history's messages together, histories in the order they started.

    Runs recorded into one conversation at once (an agent calling, as a tool, another agent
    recording into the same conversation; concurrent runs) interleave in ``seq``: given back
    in that order, a run's tool call would be parted from its result by the other run's
    messages, which providers refuse.
    """
    first: dict[UUID, int] = {}
    for index, history in enumerate(histories):
        first.setdefault(history, index)
    order = sorted(range(len(messages)), key=lambda index: first[histories[index]])
    return [messages[index] for index in order], [histories[index] for index in order]


def _close_running(
    messages: list[BaseMessage], histories: list[UUID], status: Mapping[UUID, str], known: set[str]
) -> list[BaseMessage]:
    """``messages`` with the tool calls that runs still going have not answered yet closed, in
    this run's view only, by a ``ToolMessage`` saying so (providers refuse a call without its
    result). Such a run waits on the call, maybe on this very run (an agent it called as a
    tool): it stores the real result itself. The closing messages are never stored (``known``).
    """
    running = {history for history, state in status.items() if state == "running"}
    at = (i for i, history in enumerate(histories) if history in running)
    start = next(at, None) if running else None
    if start is None:
        return messages  # no run still going has a message here: nothing to close
    out: list[BaseMessage] = messages[:start]
    waiting: dict[str, str] = {}  # call id -> tool name

    def close() -> None:
        for call_id, name in waiting.items():
            closing = ToolMessage(
                PENDING_RESULT,
                tool_call_id=call_id,
                name=name,
                status="error",
                id=f"chatmemory-pending:{call_id}",
            )
            known.add(str(closing.id))
            out.append(closing)
        waiting.clear()

    for message, history in zip(messages[start:], histories[start:], strict=True):
        if isinstance(message, ToolMessage):
            waiting.pop(message.tool_call_id, None)
            out.append(message)
            continue
        close()
        out.append(message)
        if isinstance(message, AIMessage) and history in running:
            waiting.update((call_id, c["name"]) for c in message.tool_calls if (call_id := c.get("id")))
    close()
    return out


def _of_thread(metadata: Mapping[str, Any], thread_id: str) -> bool:
    return metadata.get("framework") == "langchain" and metadata.get("thread_id") == thread_id


def _mine(history: History) -> bool:
    return (history.metadata or {}).get("pid") == os.getpid()


def _error_text(error: BaseException | None, limits: Limits) -> str | None:
    """The error a run that ``error`` stopped records, within the store's content limit too."""
    return run_error(error, limit=min(_ERROR_CHARS, limits.content)) if error is not None else None


def _unknown(run: Run, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The ``messages`` not stored yet, in order, but for summaries of the conversation.

    A message with an empty id (LangGraph gives an id only to a message with none) is given
    one, as ``stamp`` gives model outputs theirs: else it would be told from the messages
    stored by no id, and stored again at every write of the run.
    """
    for message in messages:
        if message.id == "":
            message.id = str(uuid.uuid4())
    return [m for m in messages if m.id not in run.known and m.id not in run.before and not _summary(m)]


def _summary(message: BaseMessage) -> bool:
    """A summary ``SummarizationMiddleware`` put in place of the messages it summarises: the
    store keeps those, so a resumed run gets the conversation itself, not it and its summary
    (which the middleware makes again when the conversation is still too long)."""
    return message.additional_kwargs.get("lc_source") == _SUMMARY_SOURCE


def _count_usage(run: Run, messages: Sequence[BaseMessage]) -> None:
    for message in messages:
        if isinstance(message, AIMessage):
            _add_usage(run, message.usage_metadata)


def _add_usage(run: Run, counts: Mapping[str, Any] | None) -> None:
    if counts:
        for key in _USAGE_KEYS:
            value = counts.get(key)
            run.usage[key] = run.usage.get(key, 0) + (value if isinstance(value, int) else 0)


@dataclass
class _Seen:
    messages: list[BaseMessage] = field(default_factory=list)
    histories: list[UUID] = field(default_factory=list)
    """The history of each of ``messages``."""
    grouped: bool = True
    """Each history's messages are together in ``messages`` (no run resumed after another began)."""
    started: set[UUID] = field(default_factory=set)
    """The histories of ``messages`` (never changed once set: a later read makes a copy)."""
    known: set[str] = field(default_factory=set)
    last: tuple[int, UUID] | None = None
    status: dict[UUID, str] = field(default_factory=dict)
    pending: bool = False
    """A message read was ``pending``: kept as read, so the next read is a whole one."""
    loaded: bool = False


async def _newer(
    chat: Scope, conversation_id: UUID | str, last: tuple[int, UUID] | None
) -> list[Message] | None:
    """The messages stored after ``last``, oldest first; ``None`` when ``last`` is gone."""
    newer: list[Message] = []
    cursor: str | None = None
    while True:
        page = await chat.list_messages(
            conversation_id=conversation_id,
            newest_first=True,
            limit=chat.limits.page_size(_PAGE if cursor else _FIRST_PAGE),
            cursor=cursor,
        )
        for message in page.items:
            if last is not None and message.seq <= last[0]:
                return newer[::-1] if (message.seq, message.id) == last else None
            newer.append(message)
        if not page.has_more:
            return newer[::-1] if last is None else None
        cursor = page.next_cursor


def stamp(messages: Sequence[BaseMessage], model: object) -> None:
    """Give each model output an id and the name of the model that produced it, unless the
    provider already reported one (a provider's ``model_name`` is the served version)."""
    for message in messages:
        if message.id is None:
            message.id = str(uuid.uuid4())
        if isinstance(message, AIMessage) and model is not None and produced_by(message) is None:
            message.response_metadata["model_name"] = model_name_of(model)
