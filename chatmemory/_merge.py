"""Metadata merged atomically with an append, and the tail of a conversation by time.

These serve stores that keep key/value state next to a transcript (a framework's session
state, say) and must change both in one transaction, refusing a writer that worked from
an out-of-date copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chatmemory import _queries as q
from chatmemory._messages import MessageOps
from chatmemory._schema import conversations
from chatmemory._schema import messages as message_table
from chatmemory._scope_base import Id
from chatmemory._validation import check_object, parse_id
from chatmemory.errors import ConflictError, ConversationNotFound, InvalidInputError
from chatmemory.models import ConversationSummary, Message, NewMessage

__all__ = ["MergeOps", "Tail"]

C, M = q.C, q.M


class Tail(BaseModel):
    """The end of a conversation: the conversation, its last ``seq`` and the selected messages."""

    model_config = ConfigDict(frozen=True)

    conversation: ConversationSummary
    last_seq: int
    """The ``seq`` of the last message ever appended (0 if none); it changes with every append."""
    messages: list[Message]


class MergeOps(MessageOps):
    async def merge_and_append(
        self,
        metadata: Mapping[Id, Mapping[str, Any]],
        *,
        history_id: Id | None = None,
        messages: Sequence[NewMessage | Mapping[str, Any]] = (),
        created_at: datetime | None = None,
        if_last_seq: int | None = None,
    ) -> list[Message]:
        """In one transaction, set keys in conversations' metadata and append messages.

        ``metadata`` maps conversation ids to the top-level keys to set in each one's
        metadata; keys not named keep their values. When ``history_id`` is given,
        ``messages`` are appended to it as ``append_messages`` would, stamped
        ``created_at`` (default: now; order never depends on it). With ``if_last_seq``
        nothing is written unless the history's conversation still has that last ``seq``,
        so a writer that read an older state is refused.

        Raises:
            ConversationNotFound, HistoryNotFound: one of them is not visible.
            ConflictError: the history is finished, or ``if_last_seq`` no longer holds.
            InvalidInputError: malformed ids, metadata or messages; nothing is written.
        """
        targets = {
            parse_id("metadata", cid): check_object("metadata", dict(patch)) or {}
            for cid, patch in _mapping(metadata).items()
        }
        hid = None if history_id is None else parse_id("history_id", history_id)
        batch = self._batch(messages)
        if batch and hid is None:
            raise InvalidInputError("history_id", "is required to append messages")
        if created_at is not None and (not isinstance(created_at, datetime) or created_at.tzinfo is None):
            raise InvalidInputError("created_at", "must be a timezone-aware datetime")
        if if_last_seq is not None and (isinstance(if_last_seq, bool) or not isinstance(if_last_seq, int)):
            raise InvalidInputError("if_last_seq", "must be an integer")
        async with self._db.transaction(write=True) as conn:
            locked: UUID | None = None
            if hid is not None:
                history, last_seq = await q.lock_history_for_append(conn, self.principal, hid)
                locked = history.conversation_id
                if history.status != "running":
                    raise ConflictError(f"history {hid} is {history.status}")
                if if_last_seq is not None and last_seq != if_last_seq:
                    raise ConflictError(f"conversation {locked} changed since seq {if_last_seq}")
            # One lock order for every writer (its own conversation first, then by id), so
            # writers sharing metadata conversations never deadlock.
            for cid in sorted(targets):
                await self._merge(conn, cid, targets[cid], lock=cid != locked)
            if hid is None or not batch:
                return []
            stored = await self._stored_keys(conn, hid, [m.key for m in batch if m.key is not None])
            fresh = [m for m in batch if m.key not in stored]
            added = await self._insert(conn, history, last_seq, fresh) if fresh else []
            if created_at is not None and added:
                await conn.execute(
                    update(message_table)
                    .where(M.id.in_([m.id for m in added]))
                    .values(created_at=created_at, updated_at=created_at)
                )
                added = [
                    m.model_copy(update={"created_at": created_at, "updated_at": created_at}) for m in added
                ]
        new = iter(added)
        return [stored[m.key] if m.key in stored else next(new) for m in batch]

    async def get_tail(
        self, conversation_id: Id, *, limit: int | None = None, since: datetime | None = None
    ) -> Tail:
        """A conversation's newest live messages, in ``seq`` order, read in one query.

        ``limit`` keeps at most that many (0 reads none); ``since`` keeps those created at
        or after that time.

        Raises:
            ConversationNotFound: no visible conversation has this id.
            InvalidInputError: a negative limit or a naive ``since``.
        """
        cid = parse_id("conversation_id", conversation_id)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidInputError("limit", "must be a non-negative integer")
        if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
            raise InvalidInputError("since", "must be a timezone-aware datetime")
        async with self._db.transaction() as conn:
            row = (
                await conn.execute(
                    select(*q.SUMMARY_COLUMNS, C.last_seq).where(C.id == cid, q.visible(self.principal))
                )
            ).first()
            if row is None:
                raise ConversationNotFound(cid)
            data = dict(row._mapping)
            last_seq = data.pop("last_seq")
            found: list[Message] = []
            if limit != 0:
                query = select(*q.MESSAGE_COLUMNS).where(
                    M.chat_conversation_id == cid, M.deleted_at.is_(None)
                )
                if since is not None:
                    query = query.where(M.created_at >= since)
                query = query.order_by(M.seq.desc())
                if limit is not None:
                    query = query.limit(limit)
                found = [q.message_from_row(r) for r in await conn.execute(query)]
        found.reverse()
        return Tail(conversation=ConversationSummary.model_validate(data), last_seq=last_seq, messages=found)

    async def _merge(self, conn: AsyncConnection, cid: UUID, patch: dict[str, Any], *, lock: bool) -> None:
        current = await q.get_conversation(conn, self.principal, cid, lock=lock)
        await conn.execute(
            update(conversations)
            .where(C.id == cid)
            .values(metadata={**current.metadata, **patch}, updated_at=q.now())
        )


def _mapping(value: object) -> Mapping[Any, Mapping[str, Any]]:
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise InvalidInputError("metadata", "must map conversation ids to objects")
    return value
