"""Message operations of a scope."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chatmemory import _cursor
from chatmemory import _queries as q
from chatmemory._ids import new_id
from chatmemory._schema import conversations, messages
from chatmemory._scope_base import Id, ScopeBase
from chatmemory._validation import dump_parts, model_name, parse_id
from chatmemory.content import ContentPart, flatten_content
from chatmemory.errors import ConflictError, InvalidInputError
from chatmemory.models import (
    History,
    Message,
    NewMessage,
    Page,
    parse_content,
)

C, H, M = q.C, q.H, q.M


class MessageOps(ScopeBase):
    async def append_messages(
        self, history_id: Id, messages: Sequence[NewMessage | Mapping[str, Any]]
    ) -> list[Message]:
        """Append messages to a running history, all or none, with consecutive ``seq``.

        A message whose ``key`` is already stored in this history is not added again; the
        stored one is returned in its place.

        Raises:
            HistoryNotFound: no visible history has this id.
            ConflictError: the history is finished.
            InvalidInputError: a message is malformed or over a limit; nothing is written.
        """
        hid = parse_id("history_id", history_id)
        batch = self._batch(messages)
        keys = [m.key for m in batch if m.key is not None]
        async with self._db.transaction(write=True) as conn:
            history, last_seq = await q.lock_history_for_append(conn, self.principal, hid)
            if history.status != "running":
                raise ConflictError(f"history {hid} is {history.status}; start a new history to add messages")
            stored = await self._stored_keys(conn, hid, keys)
            fresh = [m for m in batch if m.key not in stored]
            result = await self._insert(conn, history, last_seq, fresh) if fresh else []
        added = iter(result)
        return [stored[m.key] if m.key in stored else next(added) for m in batch]

    async def list_messages(
        self,
        *,
        conversation_id: Id | None = None,
        history_id: Id | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Page[Message]:
        """A page of a conversation's or a history's live messages in ``seq`` order.

        Raises:
            ConversationNotFound, HistoryNotFound: the given one is not visible.
            InvalidInputError: neither id given, or a bad limit or cursor.
        """
        limit = self._page_size(limit)
        kind = "m-" if newest_first else "m+"
        if conversation_id is None and history_id is None:
            raise InvalidInputError("conversation_id", "give conversation_id or history_id")
        cid = None if conversation_id is None else parse_id("conversation_id", conversation_id)
        hid = None if history_id is None else parse_id("history_id", history_id)
        query = q.visible_messages(self.principal)
        if cid is not None:
            query = query.where(M.chat_conversation_id == cid)
        if hid is not None:
            query = query.where(M.chat_history_id == hid)
        if cursor is not None:
            after = _cursor.sequence(*_cursor.decode(kind, cursor, 1))
            query = query.where(M.seq < after if newest_first else M.seq > after)
        query = query.order_by(M.seq.desc() if newest_first else M.seq).limit(limit + 1)
        async with self._db.transaction() as conn:
            rows = (await conn.execute(query)).all()
            if not rows:  # Nothing visible: tell a missing or foreign id from an empty page.
                await self._check_source(conn, cid, hid)
        items = [q.message_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(
            items=items, next_cursor=_cursor.encode(kind, items[-1].seq) if more else None, has_more=more
        )

    async def get_message(self, id: Id) -> Message:
        """One message.

        Raises:
            MessageNotFound: no visible message has this id.
        """
        mid = parse_id("message_id", id)
        async with self._db.transaction() as conn:
            return await q.get_message(conn, self.principal, mid)

    async def delete_message(self, id: Id) -> None:
        """Soft-delete one message.

        Raises:
            MessageNotFound: no visible message has this id.
        """
        mid = parse_id("message_id", id)
        when = q.now()
        async with self._db.transaction(write=True) as conn:
            message = await q.get_message(conn, self.principal, mid, lock=True)
            await conn.execute(update(messages).where(M.id == mid).values(deleted_at=when))
            await q.refresh_summary(conn, message.conversation_id, when)

    async def complete_message(
        self, id: Id, *, content: str | Sequence[ContentPart | Mapping[str, Any]], model: str | None = None
    ) -> Message:
        """Fill in a pending message and mark it complete.

        Raises:
            MessageNotFound: no visible message has this id.
            ConflictError: the message is not pending.
            InvalidInputError: malformed content, or a model on a non-assistant message.
        """
        parsed = parse_content(content)
        self._check_content(parsed, "content")
        values: dict[str, Any] = {
            "status": "complete",
            "content": flatten_content(parsed),
            "parts": None if isinstance(parsed, str) else dump_parts(parsed),
        }
        if model is not None:
            values["model"] = model_name("model", model)
        return await self._settle(id, values, allow_model=model is not None)

    async def fail_message(self, id: Id, *, error: str) -> Message:
        """Mark a pending message as failed with ``error``.

        Raises:
            MessageNotFound: no visible message has this id.
            ConflictError: the message is not pending.
            InvalidInputError: ``error`` is not a string.
        """
        if not isinstance(error, str):
            raise InvalidInputError("error", "must be a string")
        return await self._settle(id, {"status": "error", "error": self._text("error", error)})

    async def transcript(self, conversation_id: Id) -> list[Message]:
        """Every live message of a conversation, in ``seq`` order.

        Raises:
            ConversationNotFound: no visible conversation has this id.
        """
        cid = parse_id("conversation_id", conversation_id)
        query = q.visible_messages(self.principal).where(M.chat_conversation_id == cid).order_by(M.seq)
        async with self._db.transaction() as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                await q.get_conversation(conn, self.principal, cid)
        return [q.message_from_row(row) for row in rows]

    # -- internals -----------------------------------------------------------------------------

    async def _check_source(self, conn: AsyncConnection, cid: UUID | None, hid: UUID | None) -> None:
        """Raise the not-found error for whichever of the two is not visible, or if they don't match."""
        if hid is None:
            assert cid is not None
            await q.get_conversation(conn, self.principal, cid)
            return
        history = await q.get_history(conn, self.principal, hid)
        if cid is not None and cid != history.conversation_id:
            raise InvalidInputError("history_id", "is not in that conversation")

    async def _settle(self, id: Id, values: dict[str, Any], *, allow_model: bool = False) -> Message:
        mid = parse_id("message_id", id)
        values["updated_at"] = q.now()
        async with self._db.transaction(write=True) as conn:
            message = await q.get_message(conn, self.principal, mid, lock=True)
            if message.status != "pending":
                raise ConflictError(f"message {mid} is {message.status}, not pending")
            if allow_model and message.role != "assistant":
                raise InvalidInputError("model", f"a {message.role} message has no model")
            await conn.execute(update(messages).where(M.id == mid).values(values))
            await q.refresh_summary(conn, message.conversation_id, values["updated_at"])
        return Message.model_validate({**message.model_dump(), **values})

    async def _stored_keys(
        self, conn: AsyncConnection, history_id: UUID, keys: list[str]
    ) -> dict[str | None, Message]:
        if not keys:
            return {}
        rows = await conn.execute(
            select(*q.MESSAGE_COLUMNS).where(
                M.chat_history_id == history_id, M.key.in_(keys), M.deleted_at.is_(None)
            )
        )
        return {row.key: q.message_from_row(row) for row in rows}

    async def _insert(
        self, conn: AsyncConnection, history: History, last_seq: int, batch: list[NewMessage]
    ) -> list[Message]:
        cid = history.conversation_id
        when = q.now()
        rows: list[dict[str, Any]] = [
            {
                "id": new_id(),
                "chat_conversation_id": cid,
                "chat_history_id": history.id,
                "seq": last_seq + i,
                "role": m.role,
                "content": m.text,
                "parts": None if m.parts is None else dump_parts(m.parts),
                "model": (m.model or history.model) if m.role == "assistant" else None,
                "status": m.status,
                "error": None,
                "usage": m.usage,
                "metadata": m.metadata,
                "native": None if m.native is None else m.native.model_dump(mode="json"),
                "key": m.key,
                "created_at": when,
                "updated_at": when,
            }
            for i, m in enumerate(batch, start=1)
        ]
        await conn.execute(insert(messages), rows)
        await conn.execute(
            update(conversations)
            .where(C.id == cid)
            .values(
                last_seq=last_seq + len(rows),
                message_count=C.message_count + len(rows),
                last_message_preview=rows[-1]["content"][: q.PREVIEW_CHARS],
                updated_at=when,
            )
        )
        return [
            Message.model_construct(
                **{
                    **row,
                    "conversation_id": cid,
                    "history_id": history.id,
                    "parts": m.parts,
                    "native": m.native,
                }
            )
            for row, m in zip(rows, batch, strict=True)
        ]

    def _batch(self, messages: Sequence[NewMessage | Mapping[str, Any]]) -> list[NewMessage]:
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
            raise InvalidInputError("messages", "must be a list of messages")
        if len(messages) > self._limits.messages_per_call:
            raise InvalidInputError("messages", f"at most {self._limits.messages_per_call} per call")
        batch = [NewMessage.parse(m, f"messages.{i}") for i, m in enumerate(messages)]
        keys = [m.key for m in batch if m.key is not None]
        if len(set(keys)) != len(keys):
            raise InvalidInputError("messages", "two messages in one call share a key")
        for i, m in enumerate(batch):
            self._check_content(m.content, f"messages.{i}.content")
        return batch
