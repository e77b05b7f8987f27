"""Replacing a conversation's newest messages in one transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from chatmemory import _changes as changes
from chatmemory import _queries as q
from chatmemory import _sql as sql
from chatmemory._ids import as_uuid
from chatmemory._messages import MessageOps, append, in_batch_order, same_conversation
from chatmemory._plan import Plan, Row, Stmt
from chatmemory._scope_base import Id, rows_of
from chatmemory._validation import parse_id
from chatmemory.errors import ConflictError, InvalidInputError
from chatmemory.models import Message, NewMessage
from chatmemory.principal import Principal


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
            InvalidInputError: ``replacing`` not a list of ids, messages without a history, or
                a message malformed or over a limit; nothing is changed.
        """
        cid = parse_id("conversation_id", conversation_id)
        if isinstance(replacing, str | bytes | Mapping) or not isinstance(replacing, Sequence):
            raise InvalidInputError("replacing", "must be a list of message ids")
        expected = [parse_id("replacing", mid) for mid in replacing]
        batch = self._batch(messages)
        if batch and history_id is None:
            raise InvalidInputError("history_id", "is required to append messages")
        hid = None if history_id is None else parse_id("history_id", history_id)
        plan = _replace(
            self.principal, cid, expected, hid, batch, q.now(), one_statement=not self._db.is_sqlite
        )
        stored, added = await self._db.run(plan, write=True, rows=len(expected) + rows_of(batch))
        return in_batch_order(batch, stored, added, self._db.is_sqlite)


def _replace(
    principal: Principal,
    cid: UUID,
    expected: list[UUID],
    hid: UUID | None,
    batch: list[NewMessage],
    when: datetime,
    *,
    one_statement: bool,
) -> Plan[tuple[list[Row], list[Message]]]:
    # Lock the conversation first: every statement after it sees every committed change.
    yield from q.find_conversation(principal, cid, lock=True)
    if expected:
        newest: list[Row] = yield Stmt(sql.NEWEST_MESSAGES, {"cid": cid, "limit": len(expected)})
        newest = newest[::-1]
        if [as_uuid(row[0]) for row in newest] != expected:
            raise ConflictError(f"the newest messages of conversation {cid} have changed")
        deleted = yield Stmt(sql.DELETE_TAIL, {"cid": cid, "seq": newest[0][1], "when": when}, count=True)
        if deleted != len(expected):
            raise ConflictError(f"the newest messages of conversation {cid} have changed")
        for mid, seq, of in newest:
            yield from changes.record("message.deleted", cid, history_id=of, message_id=mid, seq=seq)
    stored: list[Row] = []
    added: list[Message] = []
    if hid is not None:
        same_conversation(cid, (yield from q.find_history(principal, hid)))
        stored, added = yield from append(principal, hid, batch, when, one_statement=one_statement)
    if expected or added:  # else nothing changed (every key was stored already)
        yield from q.refresh_summary(cid, when, removed=len(expected))
    return stored, added
