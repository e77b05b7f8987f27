"""An Agents SDK ``Session`` backed by a chatmemory conversation."""

from __future__ import annotations

import asyncio
import copy
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from agents import Agent, RunConfig, RunContextWrapper, Runner, RunResult, RunResultStreaming, SessionSettings
from agents.items import TResponseInputItem
from agents.memory.session_settings import resolve_session_limit

from chatmemory.scope import Scope
from chatmemory_openai_agents._hooks import ChatMemoryHooks
from chatmemory_openai_agents._items import items_of
from chatmemory_openai_agents._record import Recorder, RunRecord

__all__ = ["ChatMemorySession"]

# The run that ChatMemorySession.run/run_streamed is starting, claimed by the first session
# call that carries the new run's context wrapper.
_STARTING: ContextVar[tuple[ChatMemorySession, RunRecord] | None] = ContextVar(
    "chatmemory_openai_agents_starting", default=None
)


class ChatMemorySession:
    """An Agents SDK ``Session`` that keeps its items in one chatmemory conversation.

    Each agent run becomes one history of the conversation, started with the model that
    drove the run, the agent's instructions and ``{"agent", "framework", ...}`` metadata.
    Every item the SDK saves becomes one message: its neutral parts for any reader, and
    the item itself in ``native`` so that ``get_items`` returns exactly what was saved.
    Assistant messages carry the model that produced them, which changes on a handoff to
    an agent with another model.

    The session needs its ``hooks`` on the same run to know the agent and model, so run
    agents with ``await session.run(agent, input)`` or ``session.run_streamed(...)``.
    These also close the run's history: ``completed``, or ``failed`` with the error when
    the run raises, keeping every message recorded up to then. Passing ``session=session,
    hooks=session.hooks`` to ``Runner`` yourself records the messages the same way but
    leaves the history ``running``.

    All reads and writes go through ``chat``, so they are the principal's: a conversation
    the principal may not see raises ``ConversationNotFound`` at the first call.

    Args:
        chat: the principal's scope, from ``memory.scoped(principal)``.
        conversation_id: the conversation that holds the session's items.
        run_config: the ``RunConfig`` used by ``run``/``run_streamed`` unless given there,
            and to resolve the model of runs started elsewhere.
        metadata: added to the metadata of every history this session starts.
        session_settings: the SDK's session settings (``limit`` of items read).
        model: the model recorded for items added with ``add_items`` outside any run;
            by default the SDK's default model.
    """

    session_settings: SessionSettings | None

    def __init__(
        self,
        chat: Scope,
        conversation_id: UUID | str,
        *,
        run_config: RunConfig | None = None,
        metadata: Mapping[str, Any] | None = None,
        session_settings: SessionSettings | None = None,
        model: str | None = None,
    ) -> None:
        self.chat = chat
        self.conversation_id = conversation_id
        self.session_id = str(conversation_id)
        self.session_settings = session_settings
        self.run_config = run_config
        self.model = model
        self._recorder = Recorder(chat, conversation_id, metadata or {})
        self._runs: dict[int, RunRecord] = {}
        self.hooks = ChatMemoryHooks(self._recorder, self._run_for)

    # -- running agents --------------------------------------------------------------------------

    async def run(self, agent: Agent[Any], input: str | list[TResponseInputItem], **kwargs: Any) -> RunResult:
        """``Runner.run`` with this session and its hooks, recording the run as one history.

        Other keyword arguments go to ``Runner.run`` (all but ``session`` and ``hooks``).

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
            Exception: whatever the run raised, after its history was marked ``failed``.
        """
        config = kwargs.pop("run_config", None) or self.run_config
        record = RunRecord(run_config=config, agent=agent)
        token = _STARTING.set((self, record))
        try:
            result = await Runner.run(
                agent, input, session=self, hooks=self.hooks, run_config=config, **kwargs
            )
        except BaseException as error:
            await self._close(record, error)
            raise
        finally:
            _STARTING.reset(token)
        await self._close(record, None)
        return result

    def run_streamed(
        self, agent: Agent[Any], input: str | list[TResponseInputItem], **kwargs: Any
    ) -> RunResultStreaming:
        """``Runner.run_streamed`` with this session and its hooks, recorded like ``run``.

        The history is closed when the run ends; once ``stream_events()`` is exhausted it
        is closed too.
        """
        config = kwargs.pop("run_config", None) or self.run_config
        record = RunRecord(run_config=config, agent=agent)
        token = _STARTING.set((self, record))
        try:
            result = Runner.run_streamed(
                agent, input, session=self, hooks=self.hooks, run_config=config, **kwargs
            )
        finally:
            _STARTING.reset(token)
        if result.run_loop_task is not None:
            # stream_events() awaits run_loop_task before it returns, so the history is
            # closed by the time a consumer sees the stream end.
            result.run_loop_task = asyncio.ensure_future(self._close_after(record, result.run_loop_task))
        return result

    # -- the Session protocol --------------------------------------------------------------------

    async def get_items(
        self, limit: int | None = None, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> list[TResponseInputItem]:
        """The conversation's items in order; the latest ``limit`` ones when given.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        messages = await self.chat.transcript(self.conversation_id)
        items = [item for m in messages if m.status == "complete" for item in items_of(m)]
        if wrapper is not None:
            items.extend(copy.deepcopy(self._run_for(wrapper).pending))
        count = resolve_session_limit(limit, self.session_settings)
        if count is None or count < 0:
            return items
        return items[-count:] if count else []

    async def add_items(
        self, items: list[TResponseInputItem], *, wrapper: RunContextWrapper[Any] | None = None
    ) -> None:
        """Record items: within a run, in that run's history; else in a history of their own.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
            InvalidInputError: an item is over one of the store's limits.
        """
        if not items:
            return
        if wrapper is not None:
            await self._recorder.add(self._run_for(wrapper), items)
        else:
            await self._recorder.add_outside_run(items, self.model)

    async def pop_item(self, *, wrapper: RunContextWrapper[Any] | None = None) -> TResponseInputItem | None:
        """Remove the most recent item and return it, or ``None`` when there is none.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        if wrapper is not None and (pending := self._run_for(wrapper).pending):
            return pending.pop()
        cursor: str | None = None
        while True:
            page = await self.chat.list_messages(
                conversation_id=self.conversation_id, newest_first=True, cursor=cursor
            )
            for message in page.items:
                items = items_of(message) if message.status == "complete" else []
                if items:
                    await self.chat.delete_message(message.id)
                    return items[-1]
            if not page.has_more:
                return None
            cursor = page.next_cursor

    async def clear_session(self, *, wrapper: RunContextWrapper[Any] | None = None) -> None:
        """Delete every history of the conversation, and so every item; the conversation stays.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        detail = await self.chat.get_conversation(self.conversation_id)
        for history in detail.histories:
            await self.chat.delete_history(history.id)
        self._recorder.forget_histories({h.id for h in detail.histories}, list(self._runs.values()))
        if wrapper is not None:
            self._run_for(wrapper).pending.clear()

    # -- internals -------------------------------------------------------------------------------

    def _run_for(self, wrapper: RunContextWrapper[Any]) -> RunRecord:
        key = id(wrapper)
        record = self._runs.get(key)
        if record is not None:
            return record
        starting = _STARTING.get()
        if starting is not None and starting[0] is self and starting[1].wrapper is None:
            record = starting[1]
        else:
            record = RunRecord(run_config=self.run_config)
        record.wrapper = weakref.ref(wrapper)
        self._runs[key] = record
        # Drop the record with its run, so a later object reusing the id starts afresh.
        weakref.finalize(wrapper, self._runs.pop, key, None)
        return record

    async def _close(self, record: RunRecord, error: BaseException | None) -> None:
        wrapper = record.wrapper() if record.wrapper is not None else None
        try:
            await self._recorder.finish(record, error)
        finally:
            if wrapper is not None:
                self._runs.pop(id(wrapper), None)

    async def _close_after(self, record: RunRecord, task: asyncio.Future[Any]) -> Any:
        try:
            outcome = await task
        except BaseException as error:
            await self._close(record, error)
            raise
        await self._close(record, None)
        return outcome
