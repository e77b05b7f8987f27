"""Replacing a conversation's newest messages in one transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chatmemory import _queries as q
from chatmemory._messages import MessageOps
from chatmemory._schema import messages as messages_table
from chatmemory._scope_base import Id
from chatmemory._validation import parse_id
from chatmemory.errors import ConflictError, InvalidInputError
from chatmemory.models import Message, NewMessage

M = q.M


class ReplaceOps(MessageOps):
    async def replace_messages(
        self,
        conversation_id: Id,
        *,
        replacing: Sequence[Id],
        history_id: Id | None = None,
        messages: Sequence[NewMessage | Mapping[str, Any]] = (),
    ) -> list[Message]:
        """Soft-delete a conversation's newest messages and append others in their place, all or nothing.

        ``replacing`` must be exactly the conversation's newest live messages, oldest first,
        when the transaction runs; they are soft-deleted and ``messages`` are appended to the
        running history ``history_id`` in the same transaction, so readers see either the old
        tail or the new one. With no ``messages`` this removes the newest messages only if no
        one else removed or added any first: two callers racing to remove the same message
        see one succeed and the other get ``ConflictError``. Returns the appended messages
        (a message whose ``key`` is already stored in the history is returned instead).

        Raises:
            ConversationNotFound: no visible conversation has this id.
            HistoryNotFound: no visible history of that conversation has ``history_id``.
            ConflictError: the history is finished, or ``replacing`` is no longer the
                conversation's newest live messages; nothing is changed.
            InvalidInputError: messages without a history, or a message malformed or over
                a limit; nothing is changed.
        """
        cid = parse_id("conversation_id", conversation_id)
        expected = [parse_id("replacing", mid) for mid in replacing]
        batch = self._batch(messages)
        if batch and history_id is None:
            raise InvalidInputError("history_id", "is required to append messages")
        hid = None if history_id is None else parse_id("history_id", history_id)
        when = q.now()
        async with self._db.transaction(write=True) as conn:
            # Lock the conversation first: the reads below then see every committed change.
            await q.get_conversation(conn, self.principal, cid, lock=True)
            if expected:
                live = (M.chat_conversation_id == cid) & M.deleted_at.is_(None)
                newest = select(M.id, M.seq).where(live).order_by(M.seq.desc()).limit(len(expected))
                rows = (await conn.execute(newest)).all()[::-1]
                if [row.id for row in rows] != expected:
                    raise ConflictError(f"the newest messages of conversation {cid} have changed")
                tail = live & (M.seq >= rows[0].seq)
                await conn.execute(update(messages_table).where(tail).values(deleted_at=when))
            added: list[Message] = []
            if hid is not None:
                added = await self._append_locked(conn, cid, hid, batch)
            await q.refresh_summary(conn, cid, when)
        return added

    async def _append_locked(
        self, conn: AsyncConnection, cid: UUID, hid: UUID, batch: list[NewMessage]
    ) -> list[Message]:
        history, last_seq = await q.lock_history_for_append(conn, self.principal, hid)
        if history.conversation_id != cid:
            raise InvalidInputError("history_id", "is not in that conversation")
        if history.status != "running":
            raise ConflictError(f"history {hid} is {history.status}; start a new history to add messages")
        stored = await self._stored_keys(conn, hid, [m.key for m in batch if m.key is not None])
        fresh = [m for m in batch if m.key not in stored]
        added = iter(await self._insert(conn, history, last_seq, fresh) if fresh else [])
        return [stored[m.key] if m.key in stored else next(added) for m in batch]
