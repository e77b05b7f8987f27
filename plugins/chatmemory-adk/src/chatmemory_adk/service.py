"""A Google ADK session service storing sessions as chatmemory conversations."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from uuid import UUID

from google.adk import version as adk_version
from google.adk.errors._stale_session_error import StaleSessionError
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

from chatmemory import ChatMemory, ConflictError, ConversationNotFound, NotFoundError, Principal
from chatmemory_adk import _layout as layout
from chatmemory_adk._events import event_time, to_event, to_message

__all__ = ["DEFAULT_MODEL", "ChatMemorySessionService"]

DEFAULT_MODEL = "unknown"
"""The model of an invocation's history until one of its events names the model that produced it."""

_STALE = (
    "The session has been modified in storage since it was loaded. "
    "Please reload the session before appending more events."
)
_CACHED_HISTORIES = 1024
_PAGE = 1000


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
        self._open_lock = asyncio.Lock()
        self.default_model = default_model
        self._histories: OrderedDict[tuple[UUID, str], tuple[UUID, str]] = OrderedDict()

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

        Raises:
            AlreadyExistsError: the user already has a session with this id.
        """
        memory = await self._store()
        sid = session_id if session_id is not None else platform_uuid.new_uuid()
        app, usr, own = layout.split_delta(state)
        now = datetime.now(UTC)
        cid = layout.session_id_of(app_name, user_id, sid)
        chat = memory.scoped(layout.user(app_name, user_id))
        await self._ensure_state_docs(memory, app_name, user_id, now)
        info = {"kind": "session", "app_name": app_name, "user_id": user_id, "session_id": sid}
        metadata = {**info, "last_update_time": now.timestamp(), **own}
        try:
            await chat.import_conversation(
                layout.document(cid, chat.principal, metadata, now, title=sid[:200])
            )
        except ConflictError:
            raise AlreadyExistsError(f"Session with id {sid} already exists.") from None
        if app or usr:
            writer = memory.scoped(layout.user(app_name, user_id, admin=True))
            targets = {layout.app_doc_id(app_name): app, layout.user_doc_id(app_name, user_id): usr}
            await writer.merge_and_append({k: v for k, v in targets.items() if v})
        return await self._require(app_name, user_id, sid)

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
        try:
            tail = await chat.get_tail(
                layout.session_id_of(app_name, user_id, session_id), limit=limit, since=since
            )
        except ConversationNotFound:
            return None
        app_state, user_state = await self._shared_state(memory, app_name, user_id)
        metadata = tail.conversation.metadata
        session = Session(
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            state={**layout.state_of(metadata), **app_state, **user_state},
            events=[e for e in map(to_event, tail.messages) if e is not None],
            last_update_time=_float(metadata.get("last_update_time"), tail.conversation.created_at),
        )
        session._storage_update_marker = str(tail.last_seq)
        return session

    @override
    async def list_sessions(self, *, app_name: str, user_id: str | None = None) -> ListSessionsResponse:
        """The app's sessions (of one user, or of every user), oldest update first, without events."""
        memory = await self._store()
        reader = layout.user(app_name, user_id) if user_id is not None else _app_admin(app_name)
        chat = memory.scoped(reader)
        found: list[dict[str, Any]] = []
        users: dict[str, dict[str, Any]] = {}
        cursor = None
        while True:
            page = await chat.list_conversations(limit=_PAGE, cursor=cursor, archived=None)
            for conv in page.items:
                meta = conv.metadata
                if meta.get("framework") != layout.FRAMEWORK or meta.get("app_name") != app_name:
                    continue
                if meta.get("kind") == "session":
                    found.append({**meta, "created": conv.created_at})
                elif meta.get("kind") == "user-state":
                    users[str(meta.get("user_id"))] = layout.state_of(meta, layout.USER_PREFIX)
            if not page.has_more:
                break
            cursor = page.next_cursor
        app_state, _ = await self._shared_state(memory, app_name, None)
        sessions = [
            Session(
                id=str(m["session_id"]),
                app_name=app_name,
                user_id=str(m["user_id"]),
                state={**layout.state_of(m), **app_state, **users.get(str(m["user_id"]), {})},
                last_update_time=_float(m.get("last_update_time"), m["created"]),
            )
            for m in found
        ]
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    @override
    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete the session and its events; a missing session is no error."""
        memory = await self._store()
        cid = layout.session_id_of(app_name, user_id, session_id)
        try:
            await memory.scoped(layout.user(app_name, user_id)).delete_conversation(cid)
        except ConversationNotFound:
            return
        for key in [k for k in self._histories if k[0] == cid]:
            del self._histories[key]

    @override
    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The user's ``user:`` state, keys without the prefix."""
        memory = await self._store()
        try:
            tail = await memory.scoped(layout.user(app_name, user_id)).get_tail(
                layout.user_doc_id(app_name, user_id), limit=0
            )
        except ConversationNotFound:
            return {}
        return layout.state_of(tail.conversation.metadata)

    # -- events ----------------------------------------------------------------------------

    @override
    async def append_event(self, session: Session, event: Event) -> Event:
        """Store ``event`` and its state delta in one transaction, then apply both to ``session``.

        Raises:
            StaleSessionError: the session changed in storage since ``session`` was read.
            SessionNotFoundError: the session does not exist (or was deleted).
        """
        if event.partial:
            return event
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        memory = await self._store()
        app_name, user_id = session.app_name, session.user_id
        cid = layout.session_id_of(app_name, user_id, session.id)
        chat = memory.scoped(layout.user(app_name, user_id))
        expected = await self._expected_seq(chat, cid, session)
        model = event.model_version if event.author != "user" else None
        history_id = await self._history(chat, cid, event.invocation_id, model)
        app, usr, own = layout.split_delta(event.actions.state_delta if event.actions else None)
        targets = {
            cid: {"last_update_time": event.timestamp, **own},
            layout.user_doc_id(app_name, user_id): usr,
            layout.app_doc_id(app_name): app,
        }
        writer = memory.scoped(layout.user(app_name, user_id, admin=True))
        message = to_message(event, model=model)
        try:
            stored = await writer.merge_and_append(
                {k: v for k, v in targets.items() if v},
                history_id=history_id,
                messages=[message],
                created_at=event_time(event.timestamp),
                if_last_seq=expected,
            )
        except ConflictError:
            raise StaleSessionError(_STALE) from None
        except NotFoundError:
            raise SessionNotFoundError(f"Session {session.id} not found.") from None
        if stored[0].seq <= expected:
            return event  # the same event delivered again: stored once, applied once
        session._storage_update_marker = str(stored[0].seq)
        session.last_update_time = event.timestamp
        return self._commit_event_to_session(session, event)

    # -- internals -------------------------------------------------------------------------

    async def _require(self, app_name: str, user_id: str, session_id: str) -> Session:
        session = await self.get_session(app_name=app_name, user_id=user_id, session_id=session_id)
        if session is None:
            raise SessionNotFoundError(f"Session {session_id} not found.")
        return session

    async def _expected_seq(self, chat: Any, cid: UUID, session: Session) -> int:
        """The revision ``session`` was read at; stale copies without one are refused here."""
        marker = session._storage_update_marker
        if marker is not None:
            return int(marker)
        # A session object this service did not hand out: current if it ends where storage does.
        try:
            tail = await chat.get_tail(cid, limit=1)
        except ConversationNotFound:
            raise SessionNotFoundError(f"Session {session.id} not found.") from None
        stored_update = _float(
            tail.conversation.metadata.get("last_update_time"), tail.conversation.created_at
        )
        last = [e.id for e in map(to_event, tail.messages) if e is not None]
        mine = [session.events[-1].id] if session.events else []
        if stored_update > session.last_update_time and last != mine:
            raise StaleSessionError(_STALE)
        return int(tail.last_seq)

    async def _history(self, chat: Any, cid: UUID, invocation_id: str, model: str | None) -> UUID:
        """The history recording ``invocation_id`` in the session, started on its first event."""
        key = (cid, invocation_id)
        cached = self._histories.get(key)
        if cached is None:
            try:
                detail = await chat.get_conversation(cid)
            except ConversationNotFound:
                raise SessionNotFoundError("Session not found.") from None
            for h in detail.histories:
                if (h.metadata or {}).get("invocation_id") == invocation_id and h.status == "running":
                    cached = (h.id, h.model)
            if cached is None:
                started = await chat.start_history(
                    cid,
                    model=model or self.default_model,
                    metadata={
                        "invocation_id": invocation_id,
                        "framework": layout.FRAMEWORK,
                        "framework_version": adk_version.__version__,
                    },
                )
                cached = (started.id, started.model)
        if model and cached[1] == self.default_model:
            await chat.update_history(cached[0], model=model)
            cached = (cached[0], model)
        self._histories[key] = cached
        self._histories.move_to_end(key)
        while len(self._histories) > _CACHED_HISTORIES:
            self._histories.popitem(last=False)
        return cached[0]

    async def _ensure_state_docs(
        self, memory: ChatMemory, app_name: str, user_id: str, now: datetime
    ) -> None:
        for owner, cid, meta in (
            (layout.app_owner(app_name), layout.app_doc_id(app_name), {"kind": "app-state"}),
            (layout.user(app_name, user_id), layout.user_doc_id(app_name, user_id), {"kind": "user-state"}),
        ):
            meta = {**meta, "app_name": app_name, "user_id": owner.id}
            document = layout.document(cid, owner, meta, now, archived=True)
            with contextlib.suppress(ConflictError):  # created before
                await memory.scoped(owner).import_conversation(document)

    async def _shared_state(
        self, memory: ChatMemory, app_name: str, user_id: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ``app:`` state, and the ``user:`` state of ``user_id``, keys prefixed."""
        reads: list[tuple[Principal, UUID, str]] = [
            (layout.app_owner(app_name), layout.app_doc_id(app_name), layout.APP_PREFIX)
        ]
        if user_id is not None:
            reads.append(
                (layout.user(app_name, user_id), layout.user_doc_id(app_name, user_id), layout.USER_PREFIX)
            )
        states: list[dict[str, Any]] = []
        for owner, cid, prefix in reads:
            try:
                tail = await memory.scoped(owner).get_tail(cid, limit=0)
            except ConversationNotFound:
                states.append({})
                continue
            states.append(layout.state_of(tail.conversation.metadata, prefix))
        return states[0], states[1] if len(states) > 1 else {}


def _app_admin(app_name: str) -> Principal:
    return Principal(layout.APP_OWNER, tenant=app_name, admin=True)


def _float(value: Any, fallback: datetime) -> float:
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else fallback.timestamp()
    )
