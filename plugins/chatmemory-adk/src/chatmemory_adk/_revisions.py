"""Which revision of a session an append is made against, and ADK's errors for refusals."""

from __future__ import annotations

from uuid import UUID

from google.adk.errors import StaleSessionError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.sessions.session import Session

from chatmemory import ChatMemory, ConflictError, ConversationNotFound, NotFoundError
from chatmemory_adk import _layout as layout
from chatmemory_adk._events import to_event

_STALE = (
    "The session has been modified in storage since it was loaded. "
    "Please reload the session before appending more events."
)


async def revision(memory: ChatMemory, session: Session) -> tuple[int, int]:
    """The generation and last ``seq`` ``session`` was read at; stale copies without them
    are refused here.

    Raises:
        StaleSessionError: a session object without a revision, older than the stored session.
        SessionNotFoundError: the session does not exist (or was deleted).
    """
    marker = session._storage_update_marker
    if marker is not None and marker.count(":") == 1:
        read_generation, read_seq = marker.split(":")
        return int(read_generation), int(read_seq)
    # A session object this service did not hand out: current if it ends where storage does.
    app_name, user_id = session.app_name, session.user_id
    generation = layout.generation(await layout.user_metadata(memory, app_name, user_id), session.id)
    cid = layout.session_id_of(app_name, user_id, session.id, generation)
    try:
        tail = await memory.scoped(layout.user(app_name, user_id)).get_tail(cid, limit=1)
    except ConversationNotFound:
        raise SessionNotFoundError(f"Session {session.id} not found.") from None
    stored_update = layout.last_update_time(
        tail.conversation.metadata.get("last_update_time"), tail.conversation.created_at
    )
    last = [e.id for e in map(to_event, tail.messages) if e is not None]
    mine = [session.events[-1].id] if session.events else []
    if stored_update > session.last_update_time and last != mine:
        raise StaleSessionError(_STALE)
    return generation, tail.last_seq


def adk_error(exc: Exception, session_id: str, user_doc: UUID, app_doc: UUID) -> Exception:
    """The error ADK's own services raise where chatmemory raised ``exc``."""
    if isinstance(exc, ConflictError):
        return StaleSessionError(_STALE)
    if isinstance(exc, ConversationNotFound) and exc.conversation_id in (user_doc, app_doc):
        scope = "User" if exc.conversation_id == user_doc else "App"
        return ValueError(f"{scope} state missing; session state documents are created by create_session.")
    if isinstance(exc, NotFoundError):
        return SessionNotFoundError(f"Session {session_id} not found.")
    return exc
