"""Conversation operations of a scope."""

from __future__ import annotations

from collections.abc import Mapping
from types import EllipsisType
from typing import Any
from uuid import UUID

from chatmemory import _changes as changes
from chatmemory import _cursor, _rows
from chatmemory import _queries as q
from chatmemory import _sql as sql
from chatmemory._ids import new_id
from chatmemory._plan import Json, Plan, Row, Stmt
from chatmemory._scope_base import Id, ScopeBase, size_rows
from chatmemory._validation import check_object, parse_id
from chatmemory.errors import ConversationNotFound, InvalidInputError
from chatmemory.models import (
    Conversation,
    ConversationDetail,
    ConversationSummary,
    HistoryDetail,
    Page,
)
from chatmemory.principal import Principal


class ConversationOps(ScopeBase):
    async def start_conversation(
        self, title: str | None = None, *, metadata: Mapping[str, Any] | None = None
    ) -> Conversation:
        """Start a conversation owned by this principal.

        Raises:
            InvalidInputError: the title is too long or the metadata is not a JSON object.
        """
        values = {
            "id": new_id(),
            "owner_id": self.principal.id,
            "tenant_id": self.principal.tenant,
            "title": self._title(title),
            "metadata": check_object("metadata", metadata) or {},
        }
        values["created_at"] = values["updated_at"] = q.now()
        await self._db.run(insert(values), write=True, rows=1 + size_rows(values["metadata"]))
        return Conversation.model_validate(values)

    async def get_conversation(self, id: Id, *, messages: bool = False) -> ConversationDetail:
        """A conversation with its histories, and their messages when ``messages=True``.

        Raises:
            ConversationNotFound: no visible conversation has this id.
        """
        cid = parse_id("conversation_id", id)
        # Not small, even without messages: it reads every history of the conversation.
        summary_row, history_rows, message_rows = await self._db.run(
            _detail(self.principal, cid, messages, not self._db.is_sqlite)
        )
        sqlite = self._db.is_sqlite
        summary = _rows.one(_rows.summaries, summary_row, sqlite)
        loaded: dict[UUID, list[Any]] = {}
        for message in _rows.messages(message_rows, sqlite, cid):
            loaded.setdefault(message.history_id, []).append(message)
        return ConversationDetail(
            **summary.model_dump(),
            histories=[
                HistoryDetail(**h.model_dump(), messages=loaded.get(h.id, []) if messages else None)
                for h in _rows.histories(history_rows, sqlite)
            ],
        )

    async def list_conversations(
        self, *, limit: int = 20, cursor: str | None = None, archived: bool | None = False
    ) -> Page[ConversationSummary]:
        """Visible conversations, pinned first, then most recently updated.

        ``archived=False`` leaves archived ones out, ``True`` lists only them, ``None`` both.

        Raises:
            InvalidInputError: bad limit or cursor.
        """
        limit = self._page_size(limit)
        after: tuple[bool, Any, UUID] | None = None
        if cursor is not None:
            was_pinned, updated_at, last_id = _cursor.decode("c", cursor, 3)
            if not isinstance(was_pinned, bool):
                raise InvalidInputError("cursor", "is not a cursor from this listing")
            after = (was_pinned, _cursor.timestamp(updated_at), parse_id("cursor", last_id))
        archived = None if archived is None else bool(archived)
        rows = await self._db.run(_listing(self.principal, limit, after, archived), rows=limit)
        items = _rows.summaries([row[:-1] for row in rows[:limit]], self._db.is_sqlite)
        last = items[-1] if len(rows) > limit else None
        next_cursor = (
            _cursor.encode("c", last.pinned, last.updated_at.isoformat(), str(last.id)) if last else None
        )
        return _rows.page(items, next_cursor, last is not None)

    async def update_conversation(
        self,
        id: Id,
        *,
        title: str | EllipsisType | None = ...,
        metadata: Mapping[str, Any] | EllipsisType = ...,
        pinned: bool | EllipsisType = ...,
        archived: bool | EllipsisType = ...,
    ) -> Conversation:
        """Change what is given; ``...`` (the default) leaves a field as it is.

        Raises:
            ConversationNotFound: no visible conversation has this id.
            InvalidInputError: a value is malformed.
        """
        cid = parse_id("conversation_id", id)
        when = q.now()
        values: dict[str, Any] = {}
        if title is not ...:
            values["title"] = self._title(title)
        if metadata is not ...:
            values["metadata"] = check_object("metadata", metadata) or {}
        if values:
            values["updated_at"] = when
        for name, flag in (("pinned_at", pinned), ("archived_at", archived)):
            if flag is not ...:
                if not isinstance(flag, bool):
                    raise InvalidInputError(name.removesuffix("_at"), "must be a bool")
                values[name] = when if flag else None
        row = await self._db.run(
            _update(self.principal, cid, values), write=True, rows=1 + size_rows(values.get("metadata"))
        )
        current = _rows.one(_rows.summaries, row, self._db.is_sqlite)
        return q.conversation_of(current.model_copy(update=_kept_times(current, values)))

    async def delete_conversation(self, id: Id) -> None:
        """Soft-delete a conversation and everything in it, in one transaction.

        Raises:
            ConversationNotFound: no visible conversation has this id.
        """
        cid = parse_id("conversation_id", id)
        await self._db.run(_delete(self.principal, cid, q.now()), write=True)


def _kept_times(current: ConversationSummary, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with re-pinning (or re-archiving) keeping the original time."""
    values = dict(values)
    for name in ("pinned_at", "archived_at"):
        if values.get(name) is not None and getattr(current, name) is not None:
            values[name] = getattr(current, name)
    return values


def insert(values: dict[str, Any]) -> Plan[None]:
    yield Stmt(sql.INSERT_CONVERSATION, {**values, "metadata": Json(values["metadata"])})
    yield from changes.record("conversation.created", values["id"])


def _detail(
    principal: Principal, cid: UUID, messages: bool, one_statement: bool
) -> Plan[tuple[Row, list[Row], list[Row]]]:
    """The conversation's summary, its histories and (when ``messages``) their messages, from one
    snapshot: the summary counts exactly the histories' messages, and every message read has
    its history among those read (a history started and written to between two snapshots
    would lose its messages, which a reader resuming after the newest one read never sees).
    Without messages on PostgreSQL (``one_statement``), one statement; with them, a snapshot
    shared by the read's statements (see ``Stmt``)."""
    if one_statement and not messages:
        scope, params = q.principal_params(principal)
        rows = yield Stmt(sql.conversation_with_histories_postgres(scope), {**params, "cid": cid})
        summary, histories = q.row_then_children(rows, sql.HISTORY_COLUMNS)
        if summary is None:
            raise ConversationNotFound(cid)
        return summary, histories, []
    summary = yield from q.find_conversation(principal, cid, snapshot=messages)
    histories = yield Stmt(sql.CONVERSATION_HISTORIES, {"cid": cid})
    loaded = []
    if messages and histories:
        loaded = yield Stmt(sql.CONVERSATION_MESSAGES, {"cid": cid}, bulk=True)
    return summary, histories, loaded


def _listing(
    principal: Principal, limit: int, after: tuple[bool, Any, UUID] | None, archived: bool | None
) -> Plan[list[Row]]:
    scope, params = q.principal_params(principal)
    statement = sql.listing(scope, archived, None if after is None else after[0])
    params["limit"] = limit + 1
    if after is not None:
        params.update(after_at=after[1], after_id=after[2])
    rows: list[Row] = yield Stmt(statement, params)
    return rows


def _update(principal: Principal, cid: UUID, values: dict[str, Any]) -> Plan[Row]:
    current = yield from q.find_conversation(principal, cid, lock=True)
    if values:
        # Columns as the row holds them, overlaid with what changes (pin times kept when re-pinned).
        merged = {
            "cid": cid,
            "title": current[3],
            "metadata": _rows.json_text(current[4]),
            "pinned_at": current[5],
            "archived_at": current[6],
            "updated_at": current[8],
        }
        for name in ("title", "updated_at"):
            if name in values:
                merged[name] = values[name]
        if "metadata" in values:
            merged["metadata"] = Json(values["metadata"])
        for name in ("pinned_at", "archived_at"):
            if name in values and (values[name] is None or merged[name] is None):
                merged[name] = values[name]
        yield Stmt(sql.UPDATE_CONVERSATION, merged)
        yield from changes.record("conversation.updated", cid)
    return current


def _delete(principal: Principal, cid: UUID, when: Any) -> Plan[None]:
    yield from q.find_conversation(principal, cid, lock=True)
    for statement in sql.DELETE_CONVERSATION:
        yield Stmt(statement, {"cid": cid, "when": when})
    yield from changes.record("conversation.deleted", cid)
