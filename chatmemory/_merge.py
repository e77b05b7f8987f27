"""Metadata merged atomically with an append, and the tail of a conversation by time.

These serve stores that keep key/value state next to a transcript (a framework's session
state, say) and must change both in one transaction, refusing a writer that worked from
an out-of-date copy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from chatmemory import _changes as changes
from chatmemory import _queries as q
from chatmemory import _rows
from chatmemory import _sql as sql
from chatmemory._ids import as_uuid
from chatmemory._messages import MessageOps, append, check_running, in_batch_order, running, stored_keys
from chatmemory._plan import Json, Plan, Row, Stmt
from chatmemory._scope_base import Id, rows_of, size_rows
from chatmemory._validation import check_object, parse_id, utc_time
from chatmemory.errors import ConflictError, ConversationNotFound, InvalidInputError
from chatmemory.models import ConversationSummary, Message, NewMessage
from chatmemory.principal import Principal

__all__ = ["MergeOps", "Tail"]


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
        so a writer that read an older state is refused. A call whose messages all have keys
        already stored in the history (the same call made again) answers the stored messages
        and sets no metadata either.

        Raises:
            ConversationNotFound, HistoryNotFound: one of them is not visible.
            ConflictError: the history is finished, or ``if_last_seq`` no longer holds.
            InvalidInputError: malformed ids, metadata or messages, or messages or ``if_last_seq``
                without ``history_id``; nothing is written.
        """
        targets = {
            parse_id("metadata", cid): check_object("metadata", dict(patch)) or {}
            for cid, patch in _mapping(metadata).items()
        }
        hid = None if history_id is None else parse_id("history_id", history_id)
        batch = self._batch(messages)
        if batch and hid is None:
            raise InvalidInputError("history_id", "is required to append messages")
        if created_at is not None:
            created_at = utc_time("created_at", created_at)
        if if_last_seq is not None and (isinstance(if_last_seq, bool) or not isinstance(if_last_seq, int)):
            raise InvalidInputError("if_last_seq", "must be an integer")
        if if_last_seq is not None and hid is None:
            raise InvalidInputError("if_last_seq", "checks the conversation of history_id, which is required")
        plan = _merge_and_append(
            self.principal, targets, hid, batch, created_at, if_last_seq, one_statement=not self._db.is_sqlite
        )
        rows = len(targets) + size_rows(*targets.values()) + rows_of(batch)
        stored, added = await self._db.run(plan, write=True, rows=rows)
        return in_batch_order(batch, stored, added, self._db.is_sqlite)

    async def get_tail(
        self, conversation_id: Id, *, limit: int | None = None, since: datetime | None = None
    ) -> Tail:
        """A conversation's newest live messages, in ``seq`` order, and the conversation as read
        with them, in one snapshot on both backends: its ``last_seq`` and message count count
        exactly the messages there were then.

        ``limit`` keeps at most that many (0 reads none); ``since`` keeps those created at
        or after that time.

        Raises:
            ConversationNotFound: no visible conversation has this id.
            InvalidInputError: a limit that is negative or beyond a 64-bit integer, or a naive
                ``since``.
        """
        cid = parse_id("conversation_id", conversation_id)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**63
        ):
            raise InvalidInputError("limit", "must be a non-negative 64-bit integer")
        if since is not None:
            since = utc_time("since", since)
        # Since a time, it reads back through every older message until it has ``limit``
        # (creation times need not follow ``seq``): not small however few it returns.
        bound = limit if since is None else None
        plan = _tail(self.principal, cid, limit, since, one_statement=not self._db.is_sqlite)
        row, rows = await self._db.run(plan, rows=bound)
        summary = _rows.one(_rows.summaries, row[:-1], self._db.is_sqlite)
        found = _rows.messages(rows[::-1], self._db.is_sqlite, cid)
        return Tail(conversation=summary, last_seq=row[-1], messages=found)


def _merge_and_append(
    principal: Principal,
    targets: dict[UUID, dict[str, Any]],
    hid: UUID | None,
    batch: list[NewMessage],
    created_at: datetime | None,
    if_last_seq: int | None,
    *,
    one_statement: bool,
) -> Plan[tuple[list[Row], list[Message]]]:
    scope, params = q.principal_params(principal)
    when = q.now()
    own: UUID | None = None
    if hid is not None:
        history = yield from q.find_history(principal, hid)
        own = as_uuid(history[1])
        check_running(hid, history[5])
    # Every conversation this call writes is locked in one order, by id, its own among them (with
    # the history): two calls that write each other's conversations never wait for each other.
    current: dict[UUID, Row] = {}
    for cid in sorted(targets.keys() | ({own} if own is not None else set())):
        if hid is not None and cid == own:
            found = yield Stmt(sql.lock_for_append(scope), {**params, "hid": hid})
            last_seq = running(found, hid)[3]  # deleted or finished since it was read: raises
            if if_last_seq is not None and last_seq != if_last_seq:
                raise ConflictError(f"conversation {own} changed since seq {if_last_seq}")
        if cid in targets:
            current[cid] = yield from q.find_conversation(principal, cid, lock=True)
    stored: list[Row] = []
    fresh = batch
    if hid is not None and batch:
        stored, fresh = yield from stored_keys(hid, batch)
        if not fresh:  # the same call made again: it answers what the first stored, and writes nothing
            return stored, []
    for cid, row in current.items():
        merged = {**(json.loads(_rows.json_text(row[4])) if row[4] else {}), **targets[cid]}
        yield Stmt(sql.SET_CONVERSATION_METADATA, {"cid": cid, "metadata": Json(merged), "when": when})
        yield from changes.record("conversation.updated", cid)
    if hid is None or not batch:
        return [], []
    # Messages carry the time asked for; the conversation, the time of the change.
    stamped = when if created_at is None else created_at
    _, added = yield from append(
        principal, hid, fresh, stamped, one_statement=one_statement, keys_looked_up=True
    )
    if stamped is not when and added:
        yield Stmt(sql.TOUCH_CONVERSATION, {"cid": own, "when": when})
    return stored, added


def _tail(
    principal: Principal, cid: UUID, limit: int | None, since: datetime | None, *, one_statement: bool
) -> Plan[tuple[Row, list[Row]]]:
    """The conversation's row and its newest messages, newest first, from one snapshot: on
    SQLite two statements in the read's transaction; with ``one_statement`` (PostgreSQL, whose
    reader statements each take a snapshot of their own) one."""
    scope, params = q.principal_params(principal)
    values = {**params, "cid": cid, "since": since, "limit": limit}
    if one_statement:
        rows = yield Stmt(sql.tail_postgres(scope, since is not None, limit is not None), values)
        row, messages = q.row_then_children(rows, sql.MESSAGE_COLUMNS)
        if row is None:
            raise ConversationNotFound(cid)
        return row, messages
    found = yield Stmt(sql.tail_conversation(scope), values)
    if not found:
        raise ConversationNotFound(cid)
    rows = [] if limit == 0 else (yield Stmt(sql.tail_messages(since is not None, limit is not None), values))
    return found[0], rows


def _mapping(value: object) -> Mapping[Any, Mapping[str, Any]]:
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise InvalidInputError("metadata", "must map conversation ids to objects")
    return value
