"""Conversation operations of a scope."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import EllipsisType
from typing import Any
from uuid import UUID

from sqlalchemy import and_, insert, or_, select, update

from chatmemory import _cursor
from chatmemory import _queries as q
from chatmemory._ids import new_id
from chatmemory._schema import conversations, histories, messages
from chatmemory._scope_base import Id, ScopeBase
from chatmemory._validation import check_object, parse_id
from chatmemory.errors import InvalidInputError
from chatmemory.models import (
    Conversation,
    ConversationDetail,
    ConversationSummary,
    HistoryDetail,
    Page,
)

C, H, M = q.C, q.H, q.M


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
            "last_seq": 0,
            "message_count": 0,
        }
        values["created_at"] = values["updated_at"] = q.now()
        async with self._db.transaction(write=True) as conn:
            await conn.execute(insert(conversations).values(values))
        return Conversation.model_validate(values)

    async def get_conversation(self, id: Id, *, messages: bool = False) -> ConversationDetail:
        """A conversation with its histories, and their messages when ``messages=True``.

        Raises:
            ConversationNotFound: no visible conversation has this id.
        """
        cid = parse_id("conversation_id", id)
        async with self._db.transaction() as conn:
            summary = await q.get_conversation(conn, self.principal, cid)
            rows = await conn.execute(
                select(*q.HISTORY_COLUMNS)
                .where(H.chat_conversation_id == cid, H.deleted_at.is_(None))
                .order_by(H.created_at, H.id)
            )
            runs = [q.history_from_row(row) for row in rows]
            loaded = await q.history_messages(conn, [h.id for h in runs]) if messages else {}
        return ConversationDetail(
            **summary.model_dump(),
            histories=[HistoryDetail(**h.model_dump(), messages=loaded.get(h.id)) for h in runs],
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
        pinned = C.pinned_at.is_not(None)
        query = select(*q.SUMMARY_COLUMNS).where(q.visible(self.principal))
        if archived is not None:
            query = query.where(C.archived_at.is_not(None) if archived else C.archived_at.is_(None))
        if cursor is not None:
            was_pinned, updated_at, last_id = _cursor.decode("c", cursor, 3)
            if not isinstance(was_pinned, bool):
                raise InvalidInputError("cursor", "is not a cursor from this listing")
            after = _after(C.updated_at, C.id, _cursor.timestamp(updated_at), parse_id("cursor", last_id))
            query = query.where(or_(and_(pinned, after), ~pinned) if was_pinned else and_(~pinned, after))
        query = query.order_by(pinned.desc(), C.updated_at.desc(), C.id.desc()).limit(limit + 1)
        async with self._db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        items = [q.summary_from_row(row) for row in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        next_cursor = (
            _cursor.encode("c", last.pinned, last.updated_at.isoformat(), str(last.id)) if last else None
        )
        return Page(items=items, next_cursor=next_cursor, has_more=last is not None)

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
        async with self._db.transaction(write=True) as conn:
            current = await q.get_conversation(conn, self.principal, cid, lock=True)
            for name in ("pinned_at", "archived_at"):
                # Re-pinning keeps the original pin time.
                if values.get(name) is not None and getattr(current, name) is not None:
                    values[name] = getattr(current, name)
            if values:
                await conn.execute(update(conversations).where(C.id == cid).values(values))
        return q.conversation_of(current.model_copy(update=values))

    async def delete_conversation(self, id: Id) -> None:
        """Soft-delete a conversation and everything in it, in one transaction.

        Raises:
            ConversationNotFound: no visible conversation has this id.
        """
        cid = parse_id("conversation_id", id)
        when = q.now()
        async with self._db.transaction(write=True) as conn:
            await q.get_conversation(conn, self.principal, cid, lock=True)
            for table, column in (
                (messages, M.chat_conversation_id),
                (histories, H.chat_conversation_id),
                (conversations, C.id),
            ):
                await conn.execute(
                    update(table).where(column == cid, table.c.deleted_at.is_(None)).values(deleted_at=when)
                )


def _after(column: Any, id_column: Any, value: datetime, last_id: UUID) -> Any:
    return or_(column < value, and_(column == value, id_column < last_id))
