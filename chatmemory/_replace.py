"""Replacing a conversation's newest messages in one transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, update

from chatmemory import _queries as q
from chatmemory._messages import MessageOps
from chatmemory._schema import messages as messages_table
from chatmemory._scope_base import Id
from chatmemory._validation import parse_id
from chatmemory.errors import ConflictError
from chatmemory.models import Message, NewMessage

M = q.M


class ReplaceOps(MessageOps):
    async def replace_messages(
        self,
        history_id: Id,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        *,
        replacing: Sequence[Id],
    ) -> list[Message]:
        """Soft-delete the conversation's newest messages and append others, all or nothing.

        ``replacing`` must be exactly the newest live messages of the history's conversation,
        oldest first; they are soft-deleted and ``messages`` are appended to the running
        history ``history_id`` in the same transaction, so readers see either the old tail or
        the new one. Summarising (compacting) the end of a conversation is the use. A message
        whose ``key`` is already stored in the history is returned instead of added again.

        Raises:
            HistoryNotFound: no visible history has this id.
            ConflictError: the history is finished, or ``replacing`` is no longer the
                conversation's newest live messages; nothing is changed.
            InvalidInputError: a message is malformed or over a limit; nothing is changed.
        """
        hid = parse_id("history_id", history_id)
        expected = [parse_id("replacing", mid) for mid in replacing]
        batch = self._batch(messages)
        when = q.now()
        async with self._db.transaction(write=True) as conn:
            history, last_seq = await q.lock_history_for_append(conn, self.principal, hid)
            if history.status != "running":
                raise ConflictError(f"history {hid} is {history.status}; start a new history to add messages")
            cid = history.conversation_id
            if expected:
                live = (M.chat_conversation_id == cid) & M.deleted_at.is_(None)
                newest = select(M.id, M.seq).where(live).order_by(M.seq.desc()).limit(len(expected))
                rows = (await conn.execute(newest)).all()[::-1]
                if [row.id for row in rows] != expected:
                    raise ConflictError(f"the newest messages of conversation {cid} have changed")
                tail = live & (M.seq >= rows[0].seq)
                await conn.execute(update(messages_table).where(tail).values(deleted_at=when))
            stored = await self._stored_keys(conn, hid, [m.key for m in batch if m.key is not None])
            fresh = [m for m in batch if m.key not in stored]
            added = iter(await self._insert(conn, history, last_seq, fresh) if fresh else [])
            await q.refresh_summary(conn, cid, when)
        return [stored[m.key] if m.key in stored else next(added) for m in batch]
