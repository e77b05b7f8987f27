"""An Agents SDK ``Session`` backed by a chatmemory conversation."""

from __future__ import annotations

import asyncio
import collections
import inspect
import threading
import weakref
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from agents import (
    Agent,
    MaxTurnsExceeded,
    RunConfig,
    RunContextWrapper,
    RunHooks,
    Runner,
    RunResult,
    RunResultStreaming,
    SessionSettings,
)
from agents.items import TResponseInputItem
from agents.memory.session import _CompactionSnapshot
from agents.memory.session_settings import coerce_session_settings, resolve_session_limit
from agents.tool_context import ToolContext
from agents.usage import Usage

from chatmemory import ConflictError, InvalidInputError, MessageNotFound
from chatmemory.recording import added_metadata, settled
from chatmemory.scope import Scope
from chatmemory_openai_agents._cache import ItemCache
from chatmemory_openai_agents._compaction import Tail, put_back, read_tail, replace_tail, snapshot
from chatmemory_openai_agents._hooks import ChatMemoryHooks, with_own_hooks
from chatmemory_openai_agents._items import message_is_answer
from chatmemory_openai_agents._record import Newest, Recorder, RunRecord, answers, requested, usage_counts

__all__ = ["ChatMemorySession"]

_POP_ATTEMPTS = 32
_EVERYTHING = 2**62

# The run that ChatMemorySession.run/run_streamed is starting, claimed by the first session
# call that carries the new run's context wrapper.
_STARTING: ContextVar[tuple[ChatMemorySession, RunRecord] | None] = ContextVar(
    "chatmemory_openai_agents_starting", default=None
)


class ChatMemorySession:
    """An Agents SDK ``Session`` that keeps its items in one chatmemory conversation.

    Every ``add_items`` call is written at once, in one transaction, so an item the SDK
    saved survives a crash. Each agent run becomes one history of the conversation, with
    the model that drove it, the agent's instructions and ``{"agent", "framework", ...}``
    metadata; every item becomes one message: its neutral parts for any reader, and the item
    itself in ``native`` so that ``get_items`` returns exactly what was saved.

    Any wiring records the run: ``Runner.run(agent, input, session=session)`` (and
    ``run_sync``, ``run_streamed``), with or without ``hooks=session.hooks``, or
    ``session.run(...)`` / ``session.run_streamed(...)``. How much is known about the run
    depends on the wiring (see the package README): the hooks report the model of each
    message and the run's end; ``session.run`` also records how the run ended.

    The session holds no event-loop-bound state: it may be used from several threads, each
    with its own event loop, at once. Runs going at once in several tasks or threads each get
    their own history; a run is taken to be over once its task is (see the package README).

    Args:
        chat: the principal's scope, from ``memory.scoped(principal)``.
        conversation_id: the conversation that holds the session's items.
        run_config: the ``RunConfig`` used by ``run``/``run_streamed`` unless given there;
            its model names the model of runs whose agent the session cannot see.
        metadata: added to the metadata of every history this session starts.
        session_settings: the SDK's ``SessionSettings`` or a dict of them (``limit``: how
            many of the newest items ``get_items`` returns by default).
        model: the model recorded for runs whose model the session cannot see (no hooks,
            no run config model); by default the SDK's default model.

    Raises:
        TypeError: ``session_settings`` has unknown keys or is of another type.
        InvalidInputError: ``metadata`` is not a JSON object.
    """

    session_settings: SessionSettings | None

    def __init__(
        self,
        chat: Scope,
        conversation_id: UUID | str,
        *,
        run_config: RunConfig | None = None,
        metadata: Mapping[str, Any] | None = None,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
        model: str | None = None,
    ) -> None:
        self.chat = chat
        self.conversation_id = conversation_id
        self.session_id = str(conversation_id)
        self.session_settings = _settings(session_settings)
        self.run_config = run_config
        self.model = model
        self._recorder = Recorder(chat, conversation_id, added_metadata(metadata), model)
        # The runs this session knows of, kept under ``_state``: one session may serve runs in
        # several threads at once (``Runner.run_sync`` from a thread pool, each with its loop).
        self._state = threading.Lock()
        self._runs: dict[int, RunRecord] = {}
        self._ended: list[RunRecord] = []
        self._loose: RunRecord | None = None
        # The usage objects of runs whose final output the hooks reported before the run's first
        # session call (a resumed run ending on a tool's output): that run, once seen, has ended.
        self._ended_unseen: list[weakref.ref[Usage]] = []
        # The first agent of runs that started before saving anything, by their usage objects.
        self._started_unseen: list[tuple[weakref.ref[Usage], Agent[Any]]] = []
        # Keys of runs whose context object is gone, noted by its finalizer (which the collector
        # may call in any thread, even one holding ``_state`` and going over ``_runs``) and taken
        # out of ``_runs`` under ``_state`` by the next call that looks at the runs.
        self._dropped: collections.deque[int] = collections.deque()
        self._cache = ItemCache()
        # The newest message the latest read saw, and the run that read it: its first write
        # needs to know it and need not read it again.
        self._newest_read: tuple[weakref.ref[RunContextWrapper[Any]], Newest] | None = None
        self.hooks = ChatMemoryHooks(self._recorder, self._run_for, self._run_starting, self._run_ending)

    # -- running agents --------------------------------------------------------------------------

    async def run(self, agent: Agent[Any], input: str | list[TResponseInputItem], **kwargs: Any) -> RunResult:
        """``Runner.run`` with this session and its hooks, recording the run as one history.

        Other keyword arguments go to ``Runner.run`` (all but ``session``). Your own
        ``hooks=`` (``RunHooks``) are called too: each event goes to the session's hooks
        first, then to yours.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
            TypeError: ``hooks`` is not a ``RunHooks``, or ``session`` is given; nothing ran.
            Exception: whatever the run raised, after its history was marked ``failed``.
        """
        config = kwargs.pop("run_config", None) or self.run_config
        hooks = self._hooks_with(kwargs)
        record = RunRecord(run_config=config, agent=agent, managed=True)
        token = _STARTING.set((self, record))
        try:
            result = await Runner.run(agent, input, session=self, hooks=hooks, run_config=config, **kwargs)
        except BaseException as error:
            await self._close(record, error)
            raise
        finally:
            _STARTING.reset(token)
        await self._close(record, None, paused=bool(result.interruptions))
        return result

    def run_streamed(
        self, agent: Agent[Any], input: str | list[TResponseInputItem], **kwargs: Any
    ) -> RunResultStreaming:
        """``Runner.run_streamed`` with this session and its hooks, recorded like ``run``.

        The history is closed when the run ends; once ``stream_events()`` is exhausted it
        is closed too. Your own ``hooks=`` are called as with ``run``.

        Raises:
            TypeError: ``hooks`` is not a ``RunHooks``, or ``session`` is given; nothing ran.
        """
        config = kwargs.pop("run_config", None) or self.run_config
        hooks = self._hooks_with(kwargs)
        record = RunRecord(run_config=config, agent=agent, managed=True)
        token = _STARTING.set((self, record))
        try:
            result = Runner.run_streamed(agent, input, session=self, hooks=hooks, run_config=config, **kwargs)
        finally:
            _STARTING.reset(token)
        if result.run_loop_task is not None:
            # stream_events() awaits run_loop_task before it returns, so the history is
            # closed by the time a consumer sees the stream end.
            result.run_loop_task = asyncio.ensure_future(
                self._close_after(record, result, result.run_loop_task)
            )
        return result

    def _hooks_with(self, kwargs: dict[str, Any]) -> RunHooks[Any]:
        """The hooks for a run given ``kwargs`` (taking the caller's own ``hooks`` from them)."""
        if "session" in kwargs:
            raise TypeError(
                "session.run records into its own session: pass no session=, "
                "or call Runner.run(agent, input, session=...) instead"
            )
        return with_own_hooks(self.hooks, kwargs.pop("hooks", None))

    # -- the Session protocol --------------------------------------------------------------------

    async def get_items(
        self, limit: int | None = None, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> list[TResponseInputItem]:
        """The conversation's items in order; the newest ``limit`` ones when given.

        Only the newest messages are read when a limit applies (the argument, else
        ``session_settings.limit``). Without one, the items this session read before are
        reused once a small read proves them current (see the package README).

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        count = resolve_session_limit(limit, self.session_settings)
        if count is None or count < 0:
            items, newest = await self._cache.items(self.chat, self.conversation_id)
        else:
            tail = await read_tail(self.chat, self.conversation_id, max(count, 1))
            items = tail.items[-count:] if count else []
            last = tail.messages[-1] if tail.messages else None
            newest = Newest(last.history_id, message_is_answer(last)) if last else Newest(None)
        if wrapper is not None:
            self._newest_read = (weakref.ref(wrapper), newest)
        return items

    async def add_items(
        self, items: list[TResponseInputItem], *, wrapper: RunContextWrapper[Any] | None = None
    ) -> None:
        """Record items now, in the history of the run they belong to.

        A run's first items open its history; before that, the session closes its earlier
        runs that nothing closed, and the conversation's newest history if a run that is over
        left it open (its process gone, on this host; see the package README). Items saved
        without the SDK's run context (by hand, or through a session that wraps this one) go
        into one history until an assistant answer ends a batch.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
            InvalidInputError: an item is not an input item (a dict), or is over one of the
                store's limits; nothing is written.
        """
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
            raise InvalidInputError("items", f"is a {type(items).__name__}, not a list of input items")
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                kind = type(item).__name__
                raise InvalidInputError(f"items.{index}", f"is a {kind}, not an input item (a dict)")
        if items:
            if wrapper is None:
                run = self._loose_run()
                # Saved without the run's context (by hand, or through a session wrapping this
                # one): the task of its latest save tells whether it may go on.
                task = asyncio.current_task()
                run.task = weakref.ref(task) if task is not None else None
            else:
                run = self._run_for(wrapper)
                if run.task is None:
                    # The task the run saves its items from, known before the writes go to a task
                    # of their own. (The hooks may be called from short-lived tasks of the run's.)
                    task = asyncio.current_task()
                    run.task = weakref.ref(task) if task is not None else None
            await settled(self._add(items, run, wrapper))

    async def _add(
        self, items: list[TResponseInputItem], run: RunRecord, wrapper: RunContextWrapper[Any] | None
    ) -> None:
        if run.history is None:
            calls = answers(items)
            with self._state:
                unclosed = self._unclosed(run) if calls else []
            stopped = next((r for r in unclosed if calls & r.open_calls), None)
            if stopped is not None:
                self._recorder.carry_on(run, stopped)
            await self._settle_others(run)
            read, self._newest_read = self._newest_read, None
            if read is not None and wrapper is not None and read[0]() is wrapper:
                run.newest = read[1]
        await self._recorder.add(run, items)
        self._cache.wrote(len(items))

    async def pop_item(self, *, wrapper: RunContextWrapper[Any] | None = None) -> TResponseInputItem | None:
        """Remove the most recent item and return it, or ``None`` when there is none.

        Only that item's message is removed: messages holding no item after it (another
        writer's pending or failed message) stay.

        When several sessions pop the same conversation at once, each item is returned by
        exactly one of them.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
            ConflictError: other writers kept removing the newest item first, many times over.
        """
        self._newest_read = None  # what it saw is about to change
        return await settled(self._pop())

    async def _pop(self) -> TResponseInputItem | None:
        for _ in range(_POP_ATTEMPTS):
            tail = await read_tail(self.chat, self.conversation_id, 1)
            if not tail.items:
                return None
            # The newest message holding an item. Item-less messages after it (another writer's
            # pending or failed message) are not this session's to remove: they stay.
            first = max(i for i, count in enumerate(tail.counts) if count)
            message = tail.messages[first]
            if tail.counts[first] > 1:
                # A message written elsewhere can stand for several items (a reply's text and
                # its tool calls): the ones before the popped item take its place.
                if await self._pop_one_of_several(tail, first):
                    return tail.items[-1]
                continue
            try:
                await self.chat.delete_message(message.id)
            except MessageNotFound:
                continue  # another writer removed it first: look again
            return tail.items[-1]
        raise ConflictError(f"conversation {self.conversation_id}: could not pop an item; retry")

    async def _pop_one_of_several(self, tail: Tail, first: int) -> bool:
        """Remove the newest item of the message ``tail.messages[first]``, which holds several,
        putting the others back as a message of their own; ``False`` if another writer changed
        the tail first."""
        message = tail.messages[first]
        start = len(tail.items) - tail.counts[first]
        kept = tail.items[start:-1]
        if first == len(tail.messages) - 1:
            # The newest message: replaced in one transaction.
            return await replace_tail(self._recorder, tail, start, kept, reason="pop", model=message.model)
        # Another writer's item-less messages follow it, and only the newest messages can be
        # replaced at once: the kept items are written first, then the message is removed, so
        # a failure in between leaves items twice, never loses one.
        history = await put_back(self._recorder, kept, model=message.model)
        try:
            await self.chat.delete_message(message.id)
        except MessageNotFound:
            await self.chat.delete_history(history)  # another writer removed it first
            return False
        return True

    async def clear_session(self, *, wrapper: RunContextWrapper[Any] | None = None) -> None:
        """Delete every history of the conversation, and so every item; the conversation stays.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        self._newest_read = None
        await settled(self._clear())

    async def _clear(self) -> None:
        detail = await self.chat.get_conversation(self.conversation_id)
        for history in detail.histories:
            await self.chat.delete_history(history.id)
        with self._state:
            self._reap()
            runs = [*self._runs.values(), *self._ended, *filter(None, [self._loose])]
        self._recorder.forget(runs, {history.id for history in detail.histories})

    # -- compaction (OpenAIResponsesCompactionSession) -------------------------------------------

    async def _get_compaction_snapshot(self, limit: int) -> _CompactionSnapshot | None:
        self._newest_read = None  # compaction may replace the newest messages
        return snapshot(self._recorder, await read_tail(self.chat, self.conversation_id, limit))

    async def _atomic_replace_items(self, items: list[TResponseInputItem]) -> bool:
        self._newest_read = None
        tail = await read_tail(self.chat, self.conversation_id, _EVERYTHING)
        return await settled(replace_tail(self._recorder, tail, 0, items))

    # -- internals -------------------------------------------------------------------------------

    def _run_for(self, wrapper: RunContextWrapper[Any]) -> RunRecord:
        key = id(wrapper)
        with self._state:
            self._reap()  # a record left by a context object gone from this address first
            record = self._runs.get(key)
            if record is not None:
                return record
            starting = _STARTING.get()
            if starting is not None and starting[0] is self and starting[1].wrapper is None:
                record = starting[1]
            else:
                record = RunRecord(run_config=self.run_config)
            record.wrapper = weakref.ref(wrapper)
            for usage, agent in self._started_unseen:
                if usage() is wrapper.usage and not isinstance(wrapper, ToolContext):
                    record.agent = record.agent or agent
            self._started_unseen = [(u, a) for u, a in self._started_unseen if u() is not wrapper.usage]
            if any(usage() is wrapper.usage for usage in self._ended_unseen):
                record.final = True  # its items about to be saved end it
                self._ended_unseen = [u for u in self._ended_unseen if u() is not wrapper.usage]
            if isinstance(wrapper, ToolContext):
                # An agent called as a tool (Agent.as_tool) runs on the usage object of the run
                # calling it, which counts on from there: the history records what this run adds.
                record.usage_before = usage_counts(wrapper.usage)
            self._runs[key] = record
        # Drop the record with its run, so a later object reusing the id starts afresh.
        weakref.finalize(wrapper, self._dropped.append, key)
        return record

    def _run_starting(self, context: RunContextWrapper[Any], agent: Agent[Any]) -> RunRecord | None:
        """The run an agent starts in, once it has saved items. Before (an agent starts before its
        run's input is saved) the agent is kept for the run that saves items on this usage object."""
        with self._state:
            # Its turn input is not yet the run's: the usage object tells the run, unless another
            # run that has not called its model yet counts on it too (an agent called as a tool).
            record = self._seen_run(context)
            if record is not None:
                return record
            known = [
                r for r in self._runs.values() if (w := r.context()) is not None and w.usage is context.usage
            ]
            fresh = [r for r in known if r.agent is None and not requested(r)]
            if known:
                return fresh[0] if len(fresh) == 1 else None
            self._started_unseen = [(u, a) for u, a in self._started_unseen if u() is not None]
            self._started_unseen.append((weakref.ref(context.usage), agent))
        return None

    def _seen_run(self, context: RunContextWrapper[Any]) -> RunRecord | None:
        # Agent hooks get their own context object, sharing the run's usage object and its
        # current turn input. An agent called as a tool runs on the usage object of the run
        # calling it: the turn input tells the two runs apart. (Call holding ``_state``.)
        self._reap()
        for record in self._runs.values():
            wrapper = record.context()
            if (
                wrapper is not None
                and wrapper.usage is context.usage
                and wrapper.turn_input is context.turn_input
            ):
                return record
        return None

    def _run_ending(self, context: RunContextWrapper[Any]) -> RunRecord | None:
        with self._state:
            record = self._seen_run(context)
            if record is None:
                # Not seen yet: a resumed run whose approved tool's output is its final output
                # reaches its end before saving anything. It ends once its items are saved.
                self._ended_unseen = [u for u in self._ended_unseen if u() is not None]
                self._ended_unseen.append(weakref.ref(context.usage))
        return record

    def _loose_run(self) -> RunRecord:
        with self._state:
            loose = self._loose
            if loose is None or (loose.previous is not None and loose.history is None):
                loose = self._loose = RunRecord(run_config=self.run_config)
            return loose

    def _reap(self) -> None:
        """Take the runs whose context object is gone out of ``_runs`` (call holding ``_state``):
        those with a history nothing closed are over, whatever their task."""
        while self._dropped:
            record = self._runs.pop(self._dropped.popleft(), None)
            if record is not None and record.history is not None and not record.managed:
                self._ended.append(record)

    def _unclosed(self, run: RunRecord) -> list[RunRecord]:
        """This session's runs other than ``run`` whose history nothing has closed yet (call
        holding ``_state``)."""
        self._reap()
        others = [*self._ended, *self._runs.values(), *filter(None, [self._loose])]
        return [o for o in others if o is not run and not o.managed and o.history is not None]

    async def _settle_others(self, run: RunRecord) -> None:
        """Close this session's earlier runs that nothing closed, as ``run`` starts: every one
        but those still going in another task (of this thread or another), which close their
        histories themselves, or are closed by a run starting after their task has ended. A run
        whose context is gone (``_ended``) is over whatever its task."""
        current = run.saving_task()
        with self._state:
            unclosed = self._unclosed(run)
            going = [r for r in self._runs.values() if r.going(current)]
            unclosed = [o for o in unclosed if not any(o is g for g in going)]
            self._ended = []  # none of them is going: theirs are over
        for other in unclosed:
            await self._recorder.settle(other)

    async def _close(self, record: RunRecord, error: BaseException | None, *, paused: bool = False) -> None:
        if paused:
            # Stopped for tool approvals: the run resuming it carries on in its history, and
            # any other next run closes it, as for runs without session.run.
            record.managed = False
            return
        wrapper = record.context()
        try:
            # Seen through a further cancellation: a run cancelled while it closes stays closed.
            await settled(self._recorder.finish(record, error))
        finally:
            if wrapper is not None:
                with self._state:
                    self._runs.pop(id(wrapper), None)

    async def _close_after(
        self, record: RunRecord, result: RunResultStreaming, task: asyncio.Future[Any]
    ) -> Any:
        try:
            outcome = await task
        except BaseException as error:
            # An error the SDK keeps for stream_events() to raise (a failing input guardrail) may
            # end the run loop with a cancellation: the run failed with that error.
            stored = _stream_error(result)
            cancelled = isinstance(error, asyncio.CancelledError)
            await self._close(record, stored if cancelled and stored is not None else error)
            raise
        stored = _stream_error(result)
        if stored is not None:
            # The run loop ended without raising, but stream_events() raises this (max turns).
            await self._close(record, stored)
            return outcome
        if getattr(result, "_cancel_mode", "none") != "none" and not result.interruptions:
            # result.cancel(mode="after_turn") ends the run without an error, and without its answer.
            stop = asyncio.CancelledError("the run was cancelled after its turn")
            await self._close(record, stop)
            return outcome
        await self._close(record, None, paused=bool(result.interruptions))
        return outcome


# The SDK reads these methods' signatures on every call (``wrapper`` opts into its run
# context); a signature kept on the function answers that at a third of the cost.
for _method in ("get_items", "add_items", "pop_item", "clear_session"):
    _function = vars(ChatMemorySession)[_method]
    _function.__signature__ = inspect.signature(_function)


def _stream_error(result: RunResultStreaming) -> BaseException | None:
    """The error ``stream_events()`` raises once the run loop is over, if any: the SDK keeps it
    on the result instead of raising it from the run loop (max turns exceeded without a handler,
    a failing input guardrail)."""
    stored = getattr(result, "_stored_exception", None)
    if isinstance(stored, BaseException):
        return stored
    over = result.max_turns is not None and result.current_turn > result.max_turns
    if over and not getattr(result, "_max_turns_handled", False):
        return MaxTurnsExceeded(f"Max turns ({result.max_turns}) exceeded")
    return None


def _settings(value: SessionSettings | Mapping[str, Any] | None) -> SessionSettings:
    if value is None:
        return SessionSettings()
    if isinstance(value, Mapping):
        value = dict(value)
    return coerce_session_settings(value)
