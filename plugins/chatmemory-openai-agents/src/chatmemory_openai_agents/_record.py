"""Agents SDK runs recorded as chatmemory histories, item by item as the SDK saves them."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from agents import Agent, ModelResponse, RunConfig, RunContextWrapper
from agents.items import TResponseInputItem
from agents.usage import Usage
from agents.version import __version__ as agents_version

from chatmemory import ConflictError, History, HistoryNotFound, Message, NewMessage
from chatmemory.loops import AnyLoopLock
from chatmemory.recording import (
    abandoned,
    fitted,
    model_label,
    native_message,
    recorder_metadata,
    run_error,
    settled,
)
from chatmemory.scope import Scope
from chatmemory_openai_agents import _open_runs as open_runs
from chatmemory_openai_agents._items import (
    NATIVE_FORMAT,
    call_of,
    content_of,
    ends_on_answer,
    item_identity,
    items_of,
    message_is_answer,
    role_of,
)
from chatmemory_openai_agents._models import configured_model_name, default_model_name, resolve_model_name

__all__ = ["FRAMEWORK", "UNCLOSED", "Newest", "Recorder", "RunRecord", "answers", "usage_counts"]

FRAMEWORK = "openai-agents"
UNCLOSED = "the run ended without being closed: it raised, was interrupted, or its process stopped"
"""The error of a history closed by a later run because nothing closed it."""

_BATCH = 1000  # messages per append call (the store's default cap), fewer if it takes fewer
_ERROR_CHARS = 10_000
_REMEMBERED = 256  # closed history ids a recorder remembers, to skip re-checking them

Status = Literal["completed", "failed", "cancelled"]


@dataclass(frozen=True)
class Newest:
    """The conversation's newest message as the run's own read saw it, just before its first write."""

    history_id: UUID | None  # None: the conversation had no message
    answered: bool = False  # that message is an assistant answer


@dataclass(eq=False)
class RunRecord:
    """What is known about one run while it is recorded.

    A run the hooks report on is closed with the items saved after its final output (the hooks'
    ``on_agent_end``). ``managed`` runs are started by ``ChatMemorySession.run``/``run_streamed``,
    which close them when they end otherwise. Other runs are closed by an assistant answer
    ending a batch when the hooks are not wired, or by the session's next run once they are
    over: once ``task``, the task their items are saved from, is the next run's or has ended.
    """

    run_config: RunConfig | None = None
    agent: Agent[Any] | None = None
    managed: bool = False
    wrapper: weakref.ref[RunContextWrapper[Any]] | None = None
    history: History | None = None
    previous: UUID | None = None  # the run's earlier history, closed under it
    model: str | None = None  # the first model called: the run's driver
    system_prompt: str | None = None
    current: tuple[str, str] | None = None  # (model, agent) of the latest model call
    hooked: bool = False  # the hooks report on this run
    final: bool = False  # the hooks saw the final output
    answered: bool = False  # the last item recorded is an assistant answer
    saved: bool = False  # the run has saved items before
    produced: dict[str, tuple[str, str]] = field(default_factory=dict)
    open_calls: set[str] = field(default_factory=set)  # tool calls recorded without their output
    newest: Newest | None = None  # when known, spares opening the history a read
    task: weakref.ref[asyncio.Task[Any]] | None = None  # the task that saves the run's items
    usage_before: dict[str, int] | None = None  # the counts of a usage object shared with a caller
    usage_answered: dict[str, int] = field(default_factory=dict)  # the usage of the responses the hooks saw
    lock: AnyLoopLock = field(default_factory=AnyLoopLock)

    def context(self) -> RunContextWrapper[Any] | None:
        """The run's context object, while it lives."""
        return self.wrapper() if self.wrapper is not None else None

    def saving_task(self) -> asyncio.Task[Any] | None:
        """The task the run saves its items from, while it lives."""
        return self.task() if self.task is not None else None

    def going(self, current: asyncio.Task[Any] | None) -> bool:
        """Whether the run goes on in a task other than ``current``, not done yet: a run started
        there that has not returned. A run whose task is ``current``, or has ended, is over."""
        task = self.saving_task()
        return task is not None and task is not current and not task.done()


class Recorder:
    """Writes the runs of one conversation through a principal's scope."""

    def __init__(
        self, chat: Scope, conversation_id: UUID | str, metadata: Mapping[str, Any], model: str | None
    ) -> None:
        self.chat = chat
        self.conversation_id = conversation_id
        self.metadata = dict(metadata)
        self.model = model_label(model)
        self._closed: dict[UUID, None] = {}
        self._guard = threading.Lock()

    # -- what the session and the hooks report ---------------------------------------------------

    async def add(self, run: RunRecord, items: Sequence[TResponseInputItem]) -> None:
        """Record items now, in the run's history (opened on the first items)."""
        async with run.lock:
            batch = [self.message_of(item, run) for item in items]
            answered = ends_on_answer(items)
            await self._append(run, batch, closing=_closes(run, answered), resuming=answers(items))
            run.answered = answered
            run.saved = True
            _track_calls(run.open_calls, items)

    def carry_on(self, run: RunRecord, earlier: RunRecord) -> None:
        """``run`` resumes ``earlier``, which stopped for tool approvals: it carries on in its history."""
        assert earlier.history is not None
        run.history, earlier.history = earlier.history, None
        run.previous, run.open_calls = earlier.previous, earlier.open_calls
        run.produced.update(earlier.produced)
        open_runs.hold(run.history.id, run)

    async def model_called(self, run: RunRecord, agent: Agent[Any], system_prompt: str | None) -> None:
        """A model call starts: the first one names the run's driver model and instructions."""
        model = resolve_model_name(agent, run.run_config)
        run.hooked = True
        run.current = (model, agent.name)
        if run.model is not None:
            return
        run.model, run.system_prompt = model, system_prompt
        await self._name_driver(run, agent, model, system_prompt)

    async def agent_started(self, run: RunRecord, agent: Agent[Any]) -> None:
        """The run's first agent starts: until a model call names them, the run's history has its
        model and (plain-text) instructions, also when no model call follows (an input guardrail
        that trips first)."""
        if run.agent is not None or run.model is not None:
            return
        run.agent = agent
        prompt = agent.instructions if isinstance(agent.instructions, str) else None
        await self._name_driver(run, agent, resolve_model_name(agent, run.run_config), prompt)

    async def _name_driver(
        self, run: RunRecord, agent: Agent[Any], model: str, system_prompt: str | None
    ) -> None:
        async with run.lock:
            history = run.history
            if history is None or (history.model, history.system_prompts) == (model, _prompts(system_prompt)):
                return
            metadata = {**(history.metadata or {}), "agent": agent.name}
            # Closed or deleted meanwhile: the run's next write starts a new history. Seen
            # through when cancelled meanwhile: the SDK cancels the agent's turn, hooks and
            # all, when an input guardrail beside it trips, and the run is closed as the
            # agent's.
            with contextlib.suppress(ConflictError, HistoryNotFound):
                run.history = await settled(
                    self.chat.update_history(
                        history.id, model=model, system_prompts=_prompts(system_prompt), metadata=metadata
                    )
                )

    def model_answered(self, run: RunRecord, agent: Agent[Any], response: ModelResponse) -> None:
        """Remember which model and agent produced each output item of ``response``."""
        run.hooked = True
        producer = (resolve_model_name(agent, run.run_config), agent.name)
        for counter, value in usage_counts(response.usage).items():
            run.usage_answered[counter] = run.usage_answered.get(counter, 0) + value
        for output in response.output:
            key = item_identity(output)
            if key is not None:
                run.produced[key] = producer

    def agent_ended(self, run: RunRecord) -> None:
        """The run has its final output: close it once the items that follow are written."""
        run.hooked = True
        run.final = True

    async def finish(self, run: RunRecord, error: BaseException | None) -> None:
        """Close the run's history: completed, or failed/cancelled with ``error``."""
        async with run.lock:
            await self._finish(run, *_outcome(error))

    async def settle(self, run: RunRecord) -> None:
        """Close a run nothing closed: completed if it ended on an answer, else failed."""
        async with run.lock:
            await self._finish(run, *_inferred(run.answered))

    def forget(self, runs: Sequence[RunRecord], deleted: set[UUID]) -> None:
        """The histories ``deleted`` were deleted: the runs recording into them start new ones
        with their next items, naming none as the one they continue. A run that has moved on to
        a history started since (its write met the deletion) keeps it."""
        for run in runs:
            if run.history is not None and run.history.id in deleted:
                self._release(run)
            if run.previous in deleted:
                run.previous = None

    # -- internals -------------------------------------------------------------------------------

    async def _append(
        self, run: RunRecord, batch: list[NewMessage], *, closing: bool, resuming: set[str]
    ) -> None:
        """Write ``batch``: the first items start the history in the same transaction, and when
        the batch ``closing`` ends the run, its last items finish it in the same transaction."""
        done = 0
        retried = False
        size = self.chat.limits.batch_size(_BATCH)
        while done < len(batch):
            chunk = batch[done : done + size]
            last = closing and done + size >= len(batch)
            try:
                if run.history is None:
                    await self._open(run, chunk, closing=last, resuming=set() if retried else resuming)
                elif last:
                    await self.chat.finish_run(run.history.id, messages=chunk, usage=_usage(run))
                    self._closed_by_run(run)
                else:
                    await self.chat.append_messages(run.history.id, chunk)
            except (ConflictError, HistoryNotFound):
                # Closed by another run's clean-up, or deleted: carry on in a new history.
                if retried or run.history is None:
                    raise
                retried = True
                self._release(run)
                continue
            done += size

    async def _open(
        self, run: RunRecord, first: list[NewMessage], *, closing: bool, resuming: set[str]
    ) -> None:
        """Start the run's history with its ``first`` messages (and finish it, ``closing``); a run
        ``resuming`` tool calls that stopped for approval carries on in their history."""
        newest, run.newest = run.newest, None
        await self._settle_over(run)
        resumed = await self._close_abandoned(newest, resuming=resuming, run=run)
        if resumed is not None:
            stopped, run.open_calls = resumed
            run.history = stopped
            open_runs.hold(stopped.id, run)
            if closing:
                await self.chat.finish_run(stopped.id, messages=first, usage=_usage(run))
                self._closed_by_run(run)
            else:
                await self.chat.append_messages(stopped.id, first)
            return
        agent = run.agent
        model = run.model or (resolve_model_name(agent, run.run_config) if agent is not None else None)
        model = model or configured_model_name(run.run_config) or self.model or default_model_name()
        prompt = run.system_prompt
        if prompt is None and agent is not None and isinstance(agent.instructions, str):
            prompt = agent.instructions
        metadata = self.history_metadata()
        name = run.current[1] if run.current is not None else agent.name if agent is not None else None
        if name:
            metadata["agent"] = name
        if run.previous is not None:
            metadata["continues"] = str(run.previous)
        if closing:
            recorded = await self.chat.record_run(
                self.conversation_id,
                model=model,
                messages=first,
                usage=_usage(run),
                system_prompts=_prompts(prompt),
                metadata=metadata,
            )
            run.history = recorded.history
            self._closed_by_run(run)
            return
        with open_runs.starting(self.conversation_id):
            started = await self.chat.start_run(
                self.conversation_id,
                model=model,
                messages=first,
                system_prompts=_prompts(prompt),
                metadata=metadata,
            )
            run.history = started.history
            open_runs.hold(started.history.id, run)

    async def _settle_over(self, run: RunRecord) -> None:
        """Close the conversation's histories that runs of this process hold though they are over
        (their task has ended, or is ``run``'s: a worker task that has moved on), whichever
        session object recorded them: a run that raised in one long-lived task while another
        served the conversation's next run is no longer the newest once that run is. Histories
        that end on tool calls without their outputs are left: their runs may have stopped for
        approvals, and may yet be resumed."""
        try:
            conversation_id = UUID(str(self.conversation_id))
        except ValueError:
            return  # not an id: the store refuses the run's write
        current = run.saving_task()
        for held in open_runs.held_in(conversation_id):
            if held is not run and not held.open_calls and not held.going(current):
                await self.settle(held)

    async def _close_abandoned(
        self, known: Newest | None, *, resuming: set[str], run: RunRecord
    ) -> tuple[History, set[str]] | None:
        """Close the conversation's newest history if a run left it open: a run of another
        process that is gone, or a run of this one that is over though no session learned it
        (it raised, or was cancelled, and ``run`` starts through another session object). One a
        run here still goes on in stays open.

        ``known`` is the newest message as the run read it moments before, when it did. When the
        run's first items are the outputs of tool calls (``resuming``: their ids) that history
        holds unanswered, the run resumes one that stopped for their approval: that history is
        returned, open, for the run to carry on in (taken from the run here holding it, if any),
        with every call it holds unanswered (the run may stop again on those it does not answer).
        """
        if known is None:
            page = await self.chat.list_messages(
                conversation_id=self.conversation_id, newest_first=True, limit=1
            )
            message: Message | None = page.items[0] if page.items else None
            known = Newest(message.history_id, message_is_answer(message)) if message else Newest(None)
        hid = known.history_id
        if hid is None or hid in self._closed:
            return None
        holder = open_runs.holder(hid)
        if holder is not None:
            if resuming & holder.open_calls and holder.history is not None:
                history, holder.history = holder.history, None
                return history, set(holder.open_calls)
            if holder is run or holder.going(run.saving_task()):
                return None
            # Over, and held only by a session object that never learned it: closed as that
            # session's next run would close it.
            await self.settle(holder)
            await self._close_left_behind()
            return None
        try:
            history = await self.chat.get_history(hid, messages=False)
        except HistoryNotFound:
            return None  # deleted since the read
        if open_runs.taken_here(self.conversation_id, hid):
            return None
        if history.status == "running" and (history.metadata or {}).get("framework") == FRAMEWORK:
            if resuming and not known.answered:
                # Stopped for approvals in another process (or by a session gone since).
                stopped = await self.chat.get_history(hid)
                unanswered = _track_calls(set(), [i for m in stopped.messages or () for i in items_of(m)])
                if resuming & unanswered:
                    return history, unanswered
            if not left_behind(history):
                return None  # its run goes on in another process, which closes it
            status, error = _inferred(known.answered)
            with contextlib.suppress(ConflictError):  # another run closed it first
                await self.chat.finish_history(hid, status=status, error=error)
            self._remember(hid)
            await self._close_left_behind()
            return None
        self._remember(hid)
        return None

    async def _close_left_behind(self) -> None:
        """The newest history was left open by a run that is over (its process was killed, say):
        close the other histories runs left open the same way, which no later run would find as the
        newest (a process running several runs at once dies with all of them). A history whose
        last items are tool calls without their outputs is left alone: its run stopped for
        approvals, and may yet be resumed. Read only on this rare path: it reads every history."""
        detail = await self.chat.get_conversation(self.conversation_id)
        for history in detail.histories:
            if (
                history.status != "running"
                or history.id in self._closed
                or (history.metadata or {}).get("framework") != FRAMEWORK
                or open_runs.taken_here(self.conversation_id, history.id)
                or not left_behind(history)
            ):
                continue
            try:
                messages = (await self.chat.get_history(history.id)).messages or []
                if _track_calls(set(), [i for m in messages for i in items_of(m)]):
                    continue
                status, error = _inferred(bool(messages) and message_is_answer(messages[-1]))
                await self.chat.finish_history(history.id, status=status, error=error)
            except (ConflictError, HistoryNotFound):
                pass  # closed or deleted meanwhile
            self._remember(history.id)

    async def _finish(self, run: RunRecord, status: Status, error: str | None) -> None:
        history = run.history
        if history is None:
            return
        if error is not None:  # within a store opened with a lower content limit too
            error = error[: self.chat.limits.content]
        with contextlib.suppress(ConflictError, HistoryNotFound):  # closed or deleted elsewhere
            await self.chat.finish_history(history.id, status=status, usage=_usage(run), error=error)
        self._closed_by_run(run)

    def _closed_by_run(self, run: RunRecord) -> None:
        """The run's history is closed: its next items start a new one."""
        assert run.history is not None
        history_id = run.history.id
        self._release(run)
        run.final = False
        self._remember(history_id)

    def _release(self, run: RunRecord) -> None:
        if run.history is None:
            return
        open_runs.release(run.history.id)
        run.previous, run.history = run.history.id, None

    def _remember(self, history_id: UUID) -> None:
        with self._guard:  # a session may be used from several threads at once
            self._closed[history_id] = None
            if len(self._closed) > _REMEMBERED:
                del self._closed[next(iter(self._closed))]

    def history_metadata(self) -> dict[str, Any]:
        """What every history this session starts carries: the session's metadata, the framework
        and its version, and the host and process recording it (``recorder_metadata``)."""
        return {
            **self.metadata,
            "framework": FRAMEWORK,
            "framework_version": agents_version,
            **recorder_metadata(),
        }

    def message_of(self, item: TResponseInputItem, run: RunRecord | None = None) -> NewMessage:
        """The message that stores ``item``; an assistant item names its producer when known.
        The item is kept whole as its native form, its content cut to the store's limits."""
        raw: Mapping[str, Any] = item
        role = role_of(raw)
        content = content_of(raw) or ""
        fields: dict[str, Any] = {"role": role, "content": content}
        producer = None
        if role == "assistant" and run is not None:
            producer = run.produced.get(item_identity(raw) or "", run.current)
        if producer is not None:
            fields.update(model=producer[0], metadata={"agent": producer[1]})
        # A logprob of -inf, as an OpenAI-compatible server built on Python's json may send it
        # (the SDK's SQLiteSession keeps it), is stored as null.
        return fitted(native_message(fields, NATIVE_FORMAT, dict(raw)), self.chat.limits)


def answers(items: Sequence[TResponseInputItem]) -> set[str]:
    """The call ids of the tool outputs a batch starts with: a run whose first items answer tool
    calls resumes one that stopped for their approval."""
    calls: set[str] = set()
    for item in items:
        call = call_of(item)
        if role_of(item) != "tool" or call is None:
            break
        calls.add(call)
    return calls


def left_behind(history: History) -> bool:
    """Whether the ``running`` history, which no run of this process holds, was left open by a
    run that is over, so a later run may close it.

    A history names the host and process recording it (``recorder_metadata()``): one recorded
    by a process of this host that is gone, or by this process, was left behind; one whose
    process still runs is not, nor is one recorded on another host (its process cannot be seen
    from here). A history that names no process was recorded before histories named theirs:
    it is taken as left behind, as it was then.
    """
    meta = history.metadata or {}
    if "host" not in meta and "pid" not in meta:
        return True
    # This process's runs are in ``_open_runs``, not in ``LIVE_HISTORIES``: once no run here
    # holds the history, ``abandoned`` takes it as left behind by this process too.
    return abandoned(history, framework=FRAMEWORK)


def _track_calls(open_calls: set[str], items: Sequence[Mapping[str, Any]]) -> set[str]:
    """Update ``open_calls`` (the ids of tool calls without their output) with ``items``."""
    for item in items:
        call = call_of(item)
        if call is not None and role_of(item) == "tool":
            open_calls.discard(call)
        elif call is not None:
            open_calls.add(call)
    return open_calls


def _closes(run: RunRecord, answered: bool) -> bool:
    """Whether the items being added end the run, so they close its history as ``completed``.

    A run the hooks report on ends with the items saved after its final output: the SDK saves
    them once the output's guardrails and hooks have passed (a tripped guardrail's output is
    not saved), so even ``session.run``, which otherwise closes its runs when they return,
    closes it then. Without the hooks, a batch ending on an assistant answer ends the run,
    unless it is the run's input (its first batch, saved before any model request).
    """
    if run.final:
        return True
    return not run.managed and not run.hooked and answered and (run.saved or requested(run))


def requested(run: RunRecord) -> bool:
    """Whether the run has sent a model request. The first batch a run saves before its first
    is its input, which may end on an assistant message (an earlier exchange, few-shot turns)
    but is never the run's answer. Items added outside a run (no context object) may be."""
    wrapper = run.context()
    if wrapper is None:
        return True
    return wrapper.usage.requests > (run.usage_before or {}).get("requests", 0)


def _prompts(system_prompt: str | None) -> list[str] | None:
    return [system_prompt] if system_prompt else None


def _inferred(answered: bool) -> tuple[Status, str | None]:
    return ("completed", None) if answered else ("failed", UNCLOSED)


def _outcome(error: BaseException | None) -> tuple[Status, str | None]:
    if error is None:
        return "completed", None
    text = run_error(error, limit=_ERROR_CHARS)
    if isinstance(error, asyncio.CancelledError):
        return "cancelled", text
    return "failed", text


def _usage(run: RunRecord) -> dict[str, int] | None:
    wrapper = run.context()
    if wrapper is None:
        return None
    counts = usage_counts(wrapper.usage)
    if run.usage_before is None:
        return counts
    if run.usage_answered:
        # Exact even when other runs count on the same usage object at the same time (sub-agents
        # called in parallel): the responses of this run, as its hooks saw them.
        return {key: run.usage_answered.get(key, 0) for key in counts}
    return {key: value - run.usage_before.get(key, 0) for key, value in counts.items()}


def usage_counts(usage: Usage) -> dict[str, int]:
    """The counters of ``usage`` a history records: the SDK's four, and the cached input and
    reasoning output tokens (``cached_tokens``, ``reasoning_tokens``) when there are any."""
    counts = {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if cached := usage.input_tokens_details.cached_tokens:
        counts["cached_tokens"] = cached
    if reasoning := usage.output_tokens_details.reasoning_tokens:
        counts["reasoning_tokens"] = reasoning
    return counts
