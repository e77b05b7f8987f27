"""Shared plan steps and row helpers.

Every lookup that starts from an id the caller gave is filtered by the principal here.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from chatmemory import _sql as sql
from chatmemory._plan import Plan, Row, Stmt, collector_paused
from chatmemory._schema import conversations, histories, messages
from chatmemory.errors import ConversationNotFound, HistoryNotFound, MessageNotFound
from chatmemory.models import Conversation, ConversationSummary
from chatmemory.principal import Principal

PREVIEW_CHARS = sql.PREVIEW_CHARS

C, H, M = conversations.c, histories.c, messages.c


def now() -> datetime:
    return datetime.now(UTC)


def conversation_of(summary: ConversationSummary) -> Conversation:
    return Conversation.model_validate(summary.model_dump(exclude={"message_count", "last_message_preview"}))


# -- plan steps: what several operations start with -----------------------------------------


def principal_params(principal: Principal) -> tuple[sql.Scope, dict[str, Any]]:
    """The visibility variant a principal needs and the parameters it binds."""
    scope = (principal.tenant is None, principal.admin)
    return scope, {"p_owner": principal.id, "p_tenant": principal.tenant}


def find_conversation(
    principal: Principal, cid: UUID, *, lock: bool = False, snapshot: bool = False
) -> Plan[Row]:
    """The visible conversation's summary row (locked until commit on PostgreSQL when ``lock``),
    as the first statement of a read whose statements share its ``snapshot`` when asked (see ``Stmt``).

    Raises:
        ConversationNotFound: no visible conversation has this id.
    """
    scope, params = principal_params(principal)
    rows = yield Stmt(sql.get_conversation(scope, lock), {**params, "cid": cid}, snapshot=snapshot)
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


# Children cut to their own columns with the collector paused from this many (see ``collector_paused``).
_PAUSE_FROM = 1000


def row_then_children(rows: list[Row], width: int) -> tuple[Row | None, list[Row]]:
    """The rows of a PostgreSQL statement that reads a row and what hangs from it in one snapshot
    (``sql._row_then_children``): that row (``None`` when it is not visible) and the children's,
    each cut to its own columns (the children's ``width`` first). The row comes first, since
    PostgreSQL appends a UNION ALL's parts in order (and the CTE scan of the first keeps that
    Append from running in parallel); it is the one row whose child id is NULL wherever it comes.
    """
    at = 0 if rows and rows[0][0] is None else next((i for i, r in enumerate(rows) if r[0] is None), -1)
    if at < 0:
        return None, []
    children = rows[1:] if at == 0 else rows[:at] + rows[at + 1 :]
    with collector_paused() if len(children) >= _PAUSE_FROM else contextlib.nullcontext():
        return rows[at][width:], [r[:width] for r in children]


def conversation_messages(
    principal: Principal, cid: UUID, *, complete: bool, one_statement: bool
) -> Plan[list[Row]]:
    """The visible conversation's live messages (``complete``: its complete ones) in order,
    read with the test that it is visible (a principal who may not see it has none of its
    messages read). None found, the conversation is not visible, or it has none: told apart
    at one moment, on SQLite in the read's transaction, on PostgreSQL (``one_statement``) with
    its messages read again in one statement, since a conversation may become visible with its
    messages at once (imported meanwhile with its own ids). Never empty for a conversation
    deleted or imported meanwhile.

    Raises:
        ConversationNotFound: no visible conversation has this id.
    """
    scope, params = principal_params(principal)
    values = {**params, "cid": cid}
    rows: list[Row] = yield Stmt(sql.conversation_messages(scope, complete), values, bulk=True)
    if rows:
        return rows
    if not one_statement:
        yield from find_conversation(principal, cid)
        return []
    found = yield Stmt(sql.conversation_with_messages_postgres(scope, complete), values, bulk=True)
    summary, messages = row_then_children(found, sql.MESSAGE_COLUMNS)
    if summary is None:
        raise ConversationNotFound(cid)
    return messages


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


def refresh_summary(cid: Any, when: datetime, removed: int = 0) -> Plan[None]:
    """A conversation's live message count and preview after ``removed`` of its messages were
    deleted, or its newest changed."""
    yield Stmt(sql.REFRESH_SUMMARY, {"cid": cid, "when": when, "removed": removed})
