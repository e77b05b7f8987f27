"""Row access. Every lookup that starts from an id the caller gave goes through a principal filter here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, and_, select
from sqlalchemy.engine import Row as SARow
from sqlalchemy.ext.asyncio import AsyncConnection

from chatmemory import _sql as sql
from chatmemory._plan import Plan, Row, Stmt
from chatmemory._schema import conversations, histories, messages
from chatmemory.content import PARTS
from chatmemory.errors import ConversationNotFound, HistoryNotFound, MessageNotFound
from chatmemory.models import Conversation, ConversationSummary, History, Message, Native
from chatmemory.principal import Principal

PREVIEW_CHARS = sql.PREVIEW_CHARS

_M = TypeVar("_M", bound=BaseModel)

C, H, M = conversations.c, histories.c, messages.c

CONVERSATION_COLUMNS = (
    C.id,
    C.owner_id,
    C.tenant_id,
    C.title,
    C["metadata"],
    C.pinned_at,
    C.archived_at,
    C.created_at,
    C.updated_at,
)
SUMMARY_COLUMNS = (*CONVERSATION_COLUMNS, C.message_count, C.last_message_preview)
HISTORY_COLUMNS = (
    H.id,
    H.chat_conversation_id.label("conversation_id"),
    H.model,
    H.system_prompts,
    H["metadata"],
    H.status,
    H.usage,
    H.error,
    H.finished_at,
    H.created_at,
    H.updated_at,
)
MESSAGE_COLUMNS = (
    M.id,
    M.chat_conversation_id.label("conversation_id"),
    M.chat_history_id.label("history_id"),
    M.seq,
    M.role,
    M.content,
    M.parts,
    M.model,
    M.status,
    M.error,
    M.usage,
    M["metadata"],
    M.native,
    M.key,
    M.created_at,
    M.updated_at,
)


def now() -> datetime:
    return datetime.now(UTC)


def visible(principal: Principal) -> ColumnElement[bool]:
    """Live conversations the principal may see: its own in its tenant, or any in its tenant if admin."""
    tenant = C.tenant_id.is_(None) if principal.tenant is None else C.tenant_id == principal.tenant
    clause = and_(tenant, C.deleted_at.is_(None))
    return clause if principal.admin else and_(clause, C.owner_id == principal.id)


def visible_histories(principal: Principal) -> Select[Any]:
    return (
        select(*HISTORY_COLUMNS)
        .join(conversations, C.id == H.chat_conversation_id)
        .where(visible(principal), H.deleted_at.is_(None))
    )


def visible_messages(principal: Principal) -> Select[Any]:
    return (
        select(*MESSAGE_COLUMNS)
        .join(conversations, C.id == M.chat_conversation_id)
        .where(visible(principal), M.deleted_at.is_(None))
    )


async def get_conversation(
    conn: AsyncConnection, principal: Principal, conversation_id: UUID, *, lock: bool = False
) -> ConversationSummary:
    """Raises ConversationNotFound unless visible. ``lock`` holds the row until commit (PostgreSQL)."""
    query = select(*SUMMARY_COLUMNS).where(C.id == conversation_id, visible(principal))
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    if row is None:
        raise ConversationNotFound(conversation_id)
    return summary_from_row(row)


async def get_history(
    conn: AsyncConnection, principal: Principal, history_id: UUID, *, lock: bool = False
) -> History:
    """Raises HistoryNotFound unless visible. ``lock`` also locks its conversation's row (PostgreSQL)."""
    query = visible_histories(principal).where(H.id == history_id)
    if lock:
        query = query.with_for_update(of=conversations)
    row = (await conn.execute(query)).first()
    if row is None:
        raise HistoryNotFound(history_id)
    return history_from_row(row)


def _build(model: type[_M], data: dict[str, Any]) -> _M:
    """A model from a complete, already-valid field dict: ``model_construct`` without its
    per-field default handling, which dominates reading long transcripts."""
    obj = model.__new__(model)
    object.__setattr__(obj, "__dict__", data)
    object.__setattr__(obj, "__pydantic_fields_set__", set(data))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def message_from_row(row: SARow[*tuple[Any, ...]]) -> Message:
    """A ``Message`` from a row this package wrote: only the JSON parts need parsing."""
    data = dict(row._mapping)
    if data["parts"] is not None:
        data["parts"] = PARTS.validate_python(data["parts"])
    if data["native"] is not None:
        data["native"] = Native.model_construct(**data["native"])
    return _build(Message, data)


def summary_from_row(row: SARow[*tuple[Any, ...]]) -> ConversationSummary:
    return _build(ConversationSummary, dict(row._mapping))


def history_from_row(row: SARow[*tuple[Any, ...]]) -> History:
    return _build(History, dict(row._mapping))


async def history_messages(conn: AsyncConnection, history_ids: Sequence[UUID]) -> dict[UUID, list[Message]]:
    """Live messages of already-authorized histories, in ``seq`` order, by history."""
    result: dict[UUID, list[Message]] = {hid: [] for hid in history_ids}
    if history_ids:
        query = (
            select(*MESSAGE_COLUMNS)
            .where(M.chat_history_id.in_(history_ids), M.deleted_at.is_(None))
            .order_by(M.chat_conversation_id, M.seq)
        )
        for row in await conn.execute(query):
            result[row.history_id].append(message_from_row(row))
    return result


def conversation_of(summary: ConversationSummary) -> Conversation:
    return Conversation.model_validate(summary.model_dump(exclude={"message_count", "last_message_preview"}))


# -- plan steps: what several operations start with -----------------------------------------


def principal_params(principal: Principal) -> tuple[sql.Scope, dict[str, Any]]:
    """The visibility variant a principal needs and the parameters it binds."""
    scope = (principal.tenant is None, principal.admin)
    return scope, {"p_owner": principal.id, "p_tenant": principal.tenant}


def find_conversation(principal: Principal, cid: UUID, *, lock: bool = False) -> Plan[Row]:
    """The visible conversation's summary row (locked until commit on PostgreSQL when ``lock``).

    Raises:
        ConversationNotFound: no visible conversation has this id.
    """
    scope, params = principal_params(principal)
    rows = yield Stmt(sql.get_conversation(scope, lock), {**params, "cid": cid})
    if not rows:
        raise ConversationNotFound(cid)
    return rows[0]  # type: ignore[no-any-return]


def find_history(principal: Principal, hid: UUID, *, lock: bool = False) -> Plan[Row]:
    """The visible history's row (its conversation locked on PostgreSQL when ``lock``).

    Raises:
        HistoryNotFound: no visible history has this id.
    """
    scope, params = principal_params(principal)
    rows = yield Stmt(sql.get_history(scope, lock), {**params, "hid": hid})
    if not rows:
        raise HistoryNotFound(hid)
    return rows[0]  # type: ignore[no-any-return]


def find_message(principal: Principal, mid: UUID, *, lock: bool = False) -> Plan[Row]:
    """The visible message's row (its conversation locked on PostgreSQL when ``lock``).

    Raises:
        MessageNotFound: no visible message has this id.
    """
    scope, params = principal_params(principal)
    rows = yield Stmt(sql.get_message(scope, lock), {**params, "mid": mid})
    if not rows:
        raise MessageNotFound(mid)
    return rows[0]  # type: ignore[no-any-return]


def refresh_summary(cid: Any, when: datetime) -> Plan[None]:
    """Recompute a conversation's live message count and preview after messages disappear or change."""
    yield Stmt(sql.REFRESH_SUMMARY, {"cid": cid, "when": when})
