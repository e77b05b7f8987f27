"""Where ADK sessions and state live in chatmemory: principals, conversation ids, metadata.

An ADK app is a tenant and an ADK user a principal in it. A session is a conversation of
that user whose id is derived from ``(app, user, session id)``, so it is found in one
lookup (a deleted session's id, created again, gets the next generation's id). State
lives in conversation metadata, one top-level key per state key: session state in the
session's conversation, ``user:`` state in one archived conversation per
user, ``app:`` state in one archived conversation of the app owned by ``APP_OWNER``.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from chatmemory import ChatMemory, ConflictError, ConversationNotFound, InvalidInputError, Principal, Scope
from chatmemory.recording import storable

FRAMEWORK = "google-adk"
APP_OWNER = "google-adk:app"
"""The principal id owning each app's shared state (in the app's tenant)."""
STATE = "state:"
"""Prefix of the metadata keys holding state."""
GENERATION = "generation:"
"""Prefix of the user-document keys counting how often a session id was created again after a delete."""
APP_PREFIX, USER_PREFIX, TEMP_PREFIX = "app:", "user:", "temp:"

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/chatmemory/chatmemory-adk")


def user(app_name: str, user_id: str, *, admin: bool = False) -> Principal:
    """The principal of ``user_id`` in app ``app_name`` (an admin one writes shared app state).

    Raises:
        InvalidInputError: ``app_name`` or ``user_id`` cannot name a principal (the field is
            the ADK argument's name).
    """
    return _principal(app_name, user_id, admin)


def app_owner(app_name: str, *, admin: bool = False) -> Principal:
    """The owner of the app's shared state (an admin one lists every user's sessions).

    Raises:
        InvalidInputError: ``app_name`` cannot name a tenant.
    """
    return _principal(app_name, APP_OWNER, admin)


def _principal(app_name: str, user_id: str, admin: bool) -> Principal:
    try:
        return Principal(user_id, tenant=app_name, admin=admin)
    except InvalidInputError as exc:
        names = {"principal.tenant": "app_name", "principal.id": "user_id"}
        raise InvalidInputError(names.get(exc.field or "", exc.field), exc.reason) from None


def _id(*parts: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, json.dumps(parts))


def session_id_of(app_name: str, user_id: str, session_id: str, generation: int = 0) -> uuid.UUID:
    """The conversation of a session; a session created again after a delete is a new generation."""
    if generation == 0:
        return _id("session", app_name, user_id, session_id)
    return _id("session", app_name, user_id, session_id, str(generation))


def generation(user_metadata: Mapping[str, Any], session_id: str) -> int:
    value = user_metadata.get(GENERATION + session_id, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def user_doc_id(app_name: str, user_id: str) -> uuid.UUID:
    return _id("user", app_name, user_id)


def app_doc_id(app_name: str) -> uuid.UUID:
    return _id("app", app_name)


def split_delta(delta: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(app, user, session)`` parts of a state delta as metadata keys; ``temp:`` keys dropped.

    Values are turned into JSON the way ADK's own database service does; a float JSON cannot
    hold (NaN, an infinity) becomes ``null``, its JSON form as ADK's state takes it, and a NUL
    character or a lone surrogate in a text (a key too) U+FFFD, as in the event's own text
    (``recording.storable``), rather than refusing the event.
    """
    app: dict[str, Any] = {}
    usr: dict[str, Any] = {}
    session: dict[str, Any] = {}
    for key, value in storable(dict(delta or {}), fallback=str).items():
        if key.startswith(APP_PREFIX):
            app[STATE + key.removeprefix(APP_PREFIX)] = value
        elif key.startswith(USER_PREFIX):
            usr[STATE + key.removeprefix(USER_PREFIX)] = value
        elif not key.startswith(TEMP_PREFIX):
            session[STATE + key] = value
    return app, usr, session


def state_of(metadata: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The state kept in ``metadata``, each key given ``prefix``."""
    return {prefix + k.removeprefix(STATE): v for k, v in metadata.items() if k.startswith(STATE)}


def document(
    cid: uuid.UUID,
    owner: Principal,
    metadata: Mapping[str, Any],
    when: datetime,
    *,
    title: str | None = None,
    archived: bool = False,
) -> dict[str, Any]:
    """An import document creating an empty conversation with exactly this id."""
    stamp = when.isoformat()
    return {
        "format_version": 1,
        "conversation": {
            "id": str(cid),
            "owner_id": owner.id,
            "tenant_id": owner.tenant,
            "title": title,
            "metadata": {"framework": FRAMEWORK, **metadata},
            "archived_at": stamp if archived else None,
            "created_at": stamp,
            "updated_at": stamp,
        },
        "histories": [],
    }


async def read_metadata(memory: ChatMemory, owner: Principal, cid: uuid.UUID) -> dict[str, Any]:
    """A conversation's metadata as ``owner`` sees it; empty if it does not exist."""
    try:
        tail = await memory.scoped(owner).get_tail(cid, limit=0)
    except ConversationNotFound:
        return {}
    return dict(tail.conversation.metadata)


async def exists(chat: Scope, cid: uuid.UUID) -> bool:
    try:
        await chat.get_tail(cid, limit=0)
    except ConversationNotFound:
        return False
    return True


def last_update_time(value: Any, created_at: datetime) -> float:
    """A session's ``last_update_time`` from its metadata, else the time it was created."""
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else created_at.timestamp()
    )


async def create_state_documents(memory: ChatMemory, app_name: str, user_id: str, now: datetime) -> None:
    """Create the app's and the user's state documents unless they exist."""
    for owner, cid, kind in (
        (app_owner(app_name), app_doc_id(app_name), "app-state"),
        (user(app_name, user_id), user_doc_id(app_name, user_id), "user-state"),
    ):
        meta = {"kind": kind, "app_name": app_name, "user_id": owner.id}
        with contextlib.suppress(ConflictError):  # created before
            await memory.scoped(owner).import_conversation(document(cid, owner, meta, now, archived=True))


async def user_metadata(memory: ChatMemory, app_name: str, user_id: str) -> dict[str, Any]:
    """The metadata of the user's state document (empty if there is none yet)."""
    return await read_metadata(memory, user(app_name, user_id), user_doc_id(app_name, user_id))


async def app_state(memory: ChatMemory, app_name: str) -> dict[str, Any]:
    """The ``app:`` state, keys prefixed."""
    return state_of(await read_metadata(memory, app_owner(app_name), app_doc_id(app_name)), APP_PREFIX)
