"""A Google ADK session service storing sessions as chatmemory conversations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal
from uuid import UUID

from google.adk import version as adk_version
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.platform import uuid as platform_uuid
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from typing_extensions import override

from chatmemory import ChatMemory, ConflictError, ConversationNotFound, Message, NotFoundError, Scope
from chatmemory.loops import AnyLoopLock
from chatmemory.mirror import Mirrors
from chatmemory.recording import fitted, model_label, recorder_metadata
from chatmemory_adk import _layout as layout
from chatmemory_adk._events import event_time, key_prefix, to_event, to_message
from chatmemory_adk._revisions import adk_error, revision
from chatmemory_adk._runs import KeyedLocks, ModelCalls, Recent, Run, to_the_end

__all__ = ["DEFAULT_MODEL", "ChatMemorySessionService"]

DEFAULT_MODEL = "unknown"
"""The model of an invocation's history until one of its events names the model that produced it."""

_log = logging.getLogger(__name__)

_CACHED = 1024
# Sessions whose events this service keeps between reads (the most recently read ones).
_MIRRORED = 128
_GENERATION_TRIES = 5
_PAGE = 1000
# How many times a listing is read when changes commit while it is read (see ``list_sessions``).
_PASSES = 3
# How many of a session's newest messages are searched for the event the previous invocation
# stored last (compactions and rewinds may come after it).
_LOOK_BACK = 8

UNCLOSED = (
    "the invocation ended without a final response and without reporting its end: "
    "it raised, was cancelled, or its process stopped"
)
"""The error of an invocation closed by the session's next one, its end never reported."""


class ChatMemorySessionService(BaseSessionService):
    """ADK sessions in a chatmemory store: a drop-in for ``DatabaseSessionService``.

    Each call's ``(app_name, user_id)`` is the principal ``user_id`` in tenant ``app_name``;
    a session is a conversation of that principal, each invocation a history (with the
    model that drove it) and each event a message, the event itself kept in ``native``.
    App, user and session state are applied in the same transaction as their event.

    Args:
        memory: the store; the service never closes a store it was given.
        default_model: the history model of an invocation until an event names its model.
    """

    def __init__(self, memory: ChatMemory, *, default_model: str = DEFAULT_MODEL) -> None:
        self._memory: ChatMemory | None = memory
        self._opening: Any = None
        self._owned = False
        # Opened once, whichever thread and event loop asks first (a runner per thread).
        self._open_lock = AnyLoopLock()
        self.default_model = model_label(default_model) or default_model
        self._runs: Recent[tuple[UUID, str], Run] = Recent(_CACHED)
        self._calls = ModelCalls()
        self._ensured: Recent[tuple[str, str], bool] = Recent(_CACHED)
        self._mirrors: Mirrors[Event | None] = Mirrors(_events_of, _MIRRORED)
        # Appends to one session take turns in this process, as ``DatabaseSessionService``'s do:
        # each then writes after the last one through the same session object, never beside it.
        self._appending: KeyedLocks[tuple[str, str, str]] = KeyedLocks()

    @classmethod
    def from_url(
        cls, url: str | None = None, *, default_model: str = DEFAULT_MODEL, **options: Any
    ) -> ChatMemorySessionService:
        """A service over its own store at ``url`` (as ``ChatMemory.open``), opened on first use
        and closed by ``close()``."""
        service = cls.__new__(cls)
        cls.__init__(service, None, default_model=default_model)  # type: ignore[arg-type]
        service._opening = ChatMemory.open(url, **options)
        service._owned = True
        return service

    async def _store(self) -> ChatMemory:
        if self._memory is None:
            async with self._open_lock:
                if self._memory is None:
                    self._memory = await self._opening
        assert self._memory is not None
        return self._memory

    async def close(self) -> None:
        """Close the store if this service opened it (``from_url``)."""
        if self._owned and self._memory is not None:
            await self._memory.close()
            self._memory = None

    async def __aenter__(self) -> ChatMemorySessionService:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- sessions --------------------------------------------------------------------------

    @override
    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Create a session; ``app:`` and ``user:`` keys of ``state`` go to the shared state.

        A call cancelled once the store began writing the session still writes all of it.

        Raises:
            AlreadyExistsError: the user already has a session with this id.
        """
        return await to_the_end(self._create(app_name, user_id, state, session_id))

    async def _create(
        self, app_name: str, user_id: str, state: dict[str, Any] | None, session_id: str | None
    ) -> Session:
        memory = await self._store()
        sid = session_id if session_id is not None else platform_uuid.new_uuid()
        app, usr, own = layout.split_delta(state)
        now = datetime.now(UTC)
        chat = memory.scoped(layout.user(app_name, user_id))
        await self._ensure_state_docs(memory, app_name, user_id, now)
        generation = layout.generation(await layout.user_metadata(memory, app_name, user_id), sid)
        info = {"kind": "session", "app_name": app_name, "user_id": user_id, "session_id": sid}
        metadata = {**info, "last_update_time": now.timestamp(), **own}
        for _ in range(_GENERATION_TRIES):
            cid = layout.session_id_of(app_name, user_id, sid, generation)
            try:
                await chat.import_conversation(
                    layout.document(cid, chat.principal, metadata, now, title=sid[: chat.limits.title])
                )
                break
            except ConflictError:
                if await layout.exists(chat, cid):
                    raise AlreadyExistsError(f"Session with id {sid} already exists.") from None
            # The id belonged to a deleted session: this one is its next generation.
            generation += 1
            bump = {layout.GENERATION + sid: generation}
            await chat.merge_and_append({layout.user_doc_id(app_name, user_id): bump})
        else:
            raise AlreadyExistsError(f"Session with id {sid} is being created concurrently.")
        if app or usr:
            writer = memory.scoped(layout.user(app_name, user_id, admin=True))
            targets = {layout.app_doc_id(app_name): app, layout.user_doc_id(app_name, user_id): usr}
            await writer.merge_and_append({k: v for k, v in targets.items() if v})
        session = await self.get_session(app_name=app_name, user_id=user_id, session_id=sid)
        if session is None:
            raise SessionNotFoundError(f"Session {sid} was deleted while it was created.")
        return session

    @override
    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        """The session with its merged state and its events (filtered in the database by
        ``config``), or ``None`` if this user has no such session."""
        memory = await self._store()
        chat = memory.scoped(layout.user(app_name, user_id))
        limit = config.num_recent_events if config else None
        since = event_time(config.after_timestamp) if config and config.after_timestamp else None
        user_metadata, app_state = await asyncio.gather(
            layout.user_metadata(memory, app_name, user_id), layout.app_state(memory, app_name)
        )
        generation = layout.generation(user_metadata, session_id)
        cid = layout.session_id_of(app_name, user_id, session_id, generation)
        try:
            if limit is None and since is None:
                # The whole session: its events as this service last read them, brought up to
                # date by one small read, each handed out as a copy the caller may change.
                read = await self._mirrors.read_whole(chat, cid)
                conversation, last_seq = read.conversation, read.last_seq
                events = [e.model_copy(deep=True) for e in read.values if e is not None]
            else:
                tail = await chat.get_tail(cid, limit=limit, since=since)
                conversation, last_seq = tail.conversation, tail.last_seq
                events = [e for e in map(to_event, tail.messages) if e is not None]
        except ConversationNotFound:
            return None
        metadata = conversation.metadata
        state = {
            **layout.state_of(metadata),
            **app_state,
            **layout.state_of(user_metadata, layout.USER_PREFIX),
        }
        session = Session(
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            state=state,
            events=events,
            last_update_time=layout.last_update_time(
                metadata.get("last_update_time"), conversation.created_at
            ),
        )
        session._storage_update_marker = f"{generation}:{last_seq}"
        return session

    @override
    async def list_sessions(self, *, app_name: str, user_id: str | None = None) -> ListSessionsResponse:
        """The app's sessions (of one user, or of every user), oldest update first, without events."""
        memory = await self._store()
        reader = (
            layout.user(app_name, user_id) if user_id is not None else layout.app_owner(app_name, admin=True)
        )
        chat = memory.scoped(reader)
        # Keyed, so a session whose update moves it across pages mid-listing appears once.
        found: dict[tuple[str, str], dict[str, Any]] = {}
        users: dict[str, dict[str, Any]] = {}
        # More than one page is more than one read, and the listing is ordered by last update: a
        # session updated while a later page is read moves ahead of the pages read already. So a
        # listing during which a change committed is read again, the passes taken together: a
        # session is left out only if it was updated at the wrong moment in every pass.
        for _ in range(_PASSES):
            before = await chat.change_cursor()
            pages = await _list_pass(chat, app_name, found, users)
            if pages == 1 or await chat.change_cursor() == before:
                break
        app_state = await layout.app_state(memory, app_name)
        sessions = [
            Session(
                id=str(m["session_id"]),
                app_name=app_name,
                user_id=str(m["user_id"]),
                state={**layout.state_of(m), **app_state, **users.get(str(m["user_id"]), {})},
                last_update_time=layout.last_update_time(m.get("last_update_time"), m["created"]),
            )
            for m in found.values()
        ]
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    @override
    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete the session and its events; a missing session is no error."""
        memory = await self._store()
        generation = layout.generation(await layout.user_metadata(memory, app_name, user_id), session_id)
        cid = layout.session_id_of(app_name, user_id, session_id, generation)
        with contextlib.suppress(ConversationNotFound):
            await memory.scoped(layout.user(app_name, user_id)).delete_conversation(cid)
        self._runs.pop_where(lambda key: key[0] == cid)

    @override
    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The user's ``user:`` state, keys without the prefix."""
        return layout.state_of(await layout.user_metadata(await self._store(), app_name, user_id))

    # -- events ----------------------------------------------------------------------------

    @override
    async def append_event(self, session: Session, event: Event) -> Event:
        """Store ``event`` and its state delta in one transaction, then apply both to ``session``.

        Appends to one session take turns in this process, so calls made at once through one
        session object all land, in call order. A call cancelled while the store writes leaves
        ``session`` as storage has it: with the event when the write committed, without it
        when it did not.

        Raises:
            StaleSessionError: the session changed in storage since ``session`` was read.
            SessionNotFoundError: the session does not exist (or was deleted).
            ValueError: the app's or the user's state document is missing.
        """
        if event.partial:
            return event
        async with self._appending.hold((session.app_name, session.user_id, session.id)):
            if _holds(session, event):
                return event  # delivered again: stored once, applied once
            self._apply_temp_state(session, event)
            event = self._trim_temp_delta_state(event)
            write = asyncio.ensure_future(self._write(session, event))
            try:
                marker = await asyncio.shield(write)
            except asyncio.CancelledError:
                # The store finishes a write it began: bring the session object level with what
                # it committed before the cancel goes on, or the next append through the same
                # object would be refused as stale by its own event.
                with contextlib.suppress(Exception):
                    self._applied(session, event, await write)
                raise
            return self._applied(session, event, marker)

    def _applied(self, session: Session, event: Event, marker: str | None) -> Event:
        if marker is None:
            return event  # the same event delivered again: stored once, applied once
        session._storage_update_marker = marker
        session.last_update_time = event.timestamp
        return self._commit_event_to_session(session, event)

    async def _write(self, session: Session, event: Event) -> str | None:
        """Store ``event`` with its state delta; the session's new revision marker, or ``None``
        when the event was stored before."""
        memory = await self._store()
        app_name, user_id = session.app_name, session.user_id
        chat = memory.scoped(layout.user(app_name, user_id))
        generation, expected = await revision(memory, session)
        cid = layout.session_id_of(app_name, user_id, session.id, generation)
        model = (
            None
            if event.author == "user"
            else event.model_version or self._calls.model(event.invocation_id, event.author)
        )
        run, started = await self._history(chat, cid, event.invocation_id, model)
        app, usr, own = layout.split_delta(event.actions.state_delta if event.actions else None)
        user_doc, app_doc = layout.user_doc_id(app_name, user_id), layout.app_doc_id(app_name)
        targets = {cid: {"last_update_time": event.timestamp, **own}, user_doc: usr, app_doc: app}
        writer = memory.scoped(layout.user(app_name, user_id, admin=True))
        try:
            stored = await writer.merge_and_append(
                {k: v for k, v in targets.items() if v},
                history_id=run.history_id,
                messages=[fitted(to_message(event, model=model), writer.limits)],  # whole natively
                created_at=event_time(event.timestamp),
                if_last_seq=expected,
            )
        except Exception as exc:
            if started:  # the history this refused event opened records nothing: drop it
                self._runs.pop((cid, event.invocation_id))
                with contextlib.suppress(NotFoundError):
                    await chat.delete_history(run.history_id)
            mapped = adk_error(exc, session.id, user_doc, app_doc)
            if mapped is exc:
                raise
            raise mapped from None
        if stored[0].seq <= expected:
            return None
        self._mirrors.wrote(cid, 1)  # the next read of the session asks for one message more
        run.add_usage(stored[0].usage)
        if started:
            await self._closing(chat, cid, session.events, event, run)
        return f"{generation}:{stored[0].seq}"

    # -- provenance --------------------------------------------------------------------------

    def note_model_call(
        self, invocation_id: str, agent_name: str, model: str, system_prompt: str | None
    ) -> None:
        """Remember which model an agent calls in an invocation, and with which system prompt.

        ``ProvenancePlugin`` calls this before each model call. The agent's events then name
        this model where the model itself reports none, and the invocation's history records
        the model and the system prompt.
        """
        self._calls.note(invocation_id, agent_name, model, system_prompt)

    async def finish_invocation(
        self,
        invocation_id: str,
        *,
        status: Literal["completed", "failed"] = "completed",
        error: str | None = None,
    ) -> None:
        """Close the history recording ``invocation_id``, with the tokens its model events used.

        ``ProvenancePlugin`` calls this when a run ends. Events of the same invocation appended
        later (a resumed invocation) start a new history.
        """
        memory = await self._store()
        if error is not None:  # within a store opened with a lower content limit too
            error = error[: memory.limits.content]
        for key, run in self._runs.items():
            if key[1] != invocation_id or run.ended:
                continue
            with contextlib.suppress(ConflictError, NotFoundError):  # already closed, or deleted
                await memory.scoped(run.principal).finish_history(
                    run.history_id, status=status, usage=run.usage or None, error=error
                )
            # Kept, so the next invocation need not look for it; only once written: a write cut
            # off (an event loop shutting down) leaves it to the next invocation to close.
            run.ended = True

    # -- internals -------------------------------------------------------------------------

    async def _history(
        self, chat: Scope, cid: UUID, invocation_id: str, model: str | None
    ) -> tuple[Run, bool]:
        """The history recording ``invocation_id`` in this process, started on its first event
        (then ``True`` comes with it).

        A run continued by another process (or after a restart) is recorded as a history of
        its own, so finding the history never scans the session's earlier ones.
        """
        key = (cid, invocation_id)
        run = self._runs.get(key)
        started = run is None or run.ended
        if run is None or run.ended:
            try:
                history = await chat.start_history(
                    cid,
                    model=model_label(model) or self.default_model,
                    system_prompts=self._calls.prompts(invocation_id, model),
                    metadata={
                        "invocation_id": invocation_id,
                        "framework": layout.FRAMEWORK,
                        "framework_version": adk_version.__version__,
                        **recorder_metadata(),
                    },
                )
            except ConversationNotFound:
                raise SessionNotFoundError("Session not found.") from None
            run = Run(history.id, history.model, chat.principal)
        label = model_label(model)
        if label and run.model == self.default_model:
            prompts = self._calls.prompts(invocation_id, model)
            await chat.update_history(run.history_id, model=label, system_prompts=prompts)
            run.model = label
        self._runs.set(key, run)
        return run, started

    async def _closing(self, chat: Scope, cid: UUID, events: Sequence[Event], event: Event, run: Run) -> None:
        """After the first event this service stored of an invocation (history ``run``): close
        the history left open before it, and the history of a compaction or a rewind (ADK's
        bookkeeping, an invocation of one event) at once. Never fails the write, stored already."""
        try:
            if not _bookkeeping(event):
                await self._close_previous(chat, cid, events, event.invocation_id, run.history_id)
            else:
                run.ended = True
                with contextlib.suppress(ConflictError, NotFoundError):
                    await chat.finish_history(run.history_id, status="completed", usage=run.usage or None)
        except Exception:
            _log.exception("could not close a history of session %s", cid)

    async def _close_previous(
        self, chat: Scope, cid: UUID, events: Sequence[Event], invocation_id: str, current: UUID
    ) -> None:
        """Close the history holding the session's newest event (``events``, ADK's bookkeeping
        left out), of an invocation before ``invocation_id``, if it is still ``running``;
        ``current`` is the history this service object just started.

        ADK runs a session's invocations one after another: once an invocation's first event is
        stored, one writing through a session read before it is refused as stale, so the one
        before it can store no more. It is closed ``completed`` when its last event is a final
        response, ``failed`` with ADK's record of the error when that is its last event, else
        ``failed`` (``UNCLOSED``). An end ``ProvenancePlugin`` reports after that finds it closed.
        """
        last = next((e for e in reversed(events) if not _bookkeeping(e)), None)
        if last is None or last.invocation_id == invocation_id:
            # Nothing before, or the same invocation recorded elsewhere (resumed through another
            # service object, or continued by one beside this one): left to that recorder.
            return
        run = self._runs.get((cid, last.invocation_id))
        if run is not None and run.ended:
            return
        if run is not None and run.history_id != current:
            history_id = run.history_id
        else:
            run = None
            page = await chat.list_messages(conversation_id=cid, newest_first=True, limit=_LOOK_BACK)
            mark = key_prefix(last.id)
            found = [m.history_id for m in page.items if (m.key or "").startswith(mark)]
            if not found or found[0] == current:
                return
            history_id = found[0]
        error: str | None = None
        status: Literal["completed", "failed"] = "failed"
        if last.error_code or last.error_message:  # ADK's record of what stopped the run
            error = f"{last.error_code or 'error'}: {last.error_message or ''}"[: chat.limits.content]
        elif last.author != "user" and last.is_final_response():
            status = "completed"
        else:
            error = UNCLOSED
        if run is not None:
            run.ended = True
        usage = (run.usage or None) if run is not None else None
        with contextlib.suppress(ConflictError, NotFoundError):  # closed already, or deleted
            await chat.finish_history(history_id, status=status, usage=usage, error=error)

    async def _ensure_state_docs(
        self, memory: ChatMemory, app_name: str, user_id: str, now: datetime
    ) -> None:
        if self._ensured.get((app_name, user_id)) is None:
            await layout.create_state_documents(memory, app_name, user_id, now)
            self._ensured.set((app_name, user_id), True)


async def _list_pass(
    chat: Scope, app_name: str, found: dict[tuple[str, str], dict[str, Any]], users: dict[str, dict[str, Any]]
) -> int:
    """Read every page of the listing into ``found`` (sessions) and ``users`` (user state);
    answers how many pages it read."""
    cursor, pages = None, 0
    while True:
        page = await chat.list_conversations(limit=chat.limits.page_size(_PAGE), cursor=cursor, archived=None)
        pages += 1
        for conv in page.items:
            meta = conv.metadata
            if meta.get("framework") != layout.FRAMEWORK or meta.get("app_name") != app_name:
                continue
            if meta.get("kind") == "session":
                found[(str(meta.get("user_id")), str(meta.get("session_id")))] = {
                    **meta,
                    "created": conv.created_at,
                }
            elif meta.get("kind") == "user-state":
                users[str(meta.get("user_id"))] = layout.state_of(meta, layout.USER_PREFIX)
        if not page.has_more:
            return pages
        cursor = page.next_cursor


def _bookkeeping(event: Event) -> bool:
    """Whether ``event`` is ADK's bookkeeping rather than a step of an invocation: a compaction
    (a summary of earlier events) or a rewind, each appended as an invocation of its own, a
    compaction within another invocation too."""
    actions = event.actions
    return bool(actions and (actions.compaction or actions.rewind_before_invocation_id))


def _holds(session: Session, event: Event) -> bool:
    """Whether ``session``, read from this service, holds an event equal to ``event`` (the same
    id and fields): then storage does, whichever history (invocation) recorded it. Sessions
    built elsewhere may hold events storage does not."""
    return session._storage_update_marker is not None and any(
        e == event for e in session.events if e.id == event.id
    )


def _events_of(messages: Sequence[Message]) -> list[Event | None]:
    """The event each message recorded (``None`` for a message this service did not write)."""
    return [to_event(message) for message in messages]
