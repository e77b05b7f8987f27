"""Message operations of a scope."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from chatmemory import _changes as changes
from chatmemory import _cursor, _rows
from chatmemory import _queries as q
from chatmemory import _sql as sql
from chatmemory._ids import as_uuid, new_ids
from chatmemory._plan import Json, Many, Plan, Row, Stmt, sqlite_value
from chatmemory._scope_base import Id, ScopeBase, content_rows, rows_of
from chatmemory._validation import dump_parts, model_name, parse_id
from chatmemory.content import ContentPart, flatten_content
from chatmemory.errors import (
    ConflictError,
    ConversationNotFound,
    HistoryNotFound,
    InvalidInputError,
    MessageNotFound,
)
from chatmemory.models import (
    ChangeKind,
    Message,
    NewMessage,
    Page,
    parse_content,
)
from chatmemory.principal import Principal


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
        appended, _ = await self._append_keyed(history_id, messages)
        return appended

    async def _append_keyed(
        self, history_id: Id, messages: Sequence[NewMessage | Mapping[str, Any]]
    ) -> tuple[list[Message], list[Message]]:
        """``append_messages``, and the messages it added: those of its answer that are not among
        them were returned in place of messages whose key the history already held (stored by
        an earlier call, or by a concurrent one that took the history first), as the append
        found them, never told by comparing clocks. The answer is the added list itself when it
        found none.
        """
        hid = parse_id("history_id", history_id)
        batch = self._batch(messages)
        when, postgres = q.now(), not self._db.is_sqlite

        def plan(unread_keys: bool) -> Plan[tuple[list[Row], list[Message]]]:
            return append(
                self.principal, hid, batch, when, one_statement=postgres, alone=True, unread_keys=unread_keys
            )

        stored, added = await self._db.run(
            plan(postgres), write=True, group=hid, rows=rows_of(batch), fallback=lambda: plan(False)
        )
        return in_batch_order(batch, stored, added, self._db.is_sqlite), added

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
        # The cursor names its listing: a position in one conversation means nothing in another.
        listing = f"h{hid}" if hid is not None else f"c{cid}"
        one = not self._db.is_sqlite
        after = None
        if cursor is not None:
            seq, of = _cursor.decode(kind, cursor, 2)
            if of != listing:
                # A listing that is not visible still answers not-found, as with any other cursor.
                await self._db.run(_page(self.principal, cid, hid, 1, None, newest_first, one), rows=1)
                raise InvalidInputError("cursor", "is not a cursor from this listing")
            after = _cursor.sequence(seq)
        rows = await self._db.run(
            _page(self.principal, cid, hid, limit, after, newest_first, one), rows=limit
        )
        items = _rows.messages(rows[:limit], self._db.is_sqlite, cid)
        more = len(rows) > limit
        next_cursor = _cursor.encode(kind, items[-1].seq, listing) if more else None
        return _rows.page(items, next_cursor, more)

    async def get_message(self, id: Id) -> Message:
        """One message.

        Raises:
            MessageNotFound: no visible message has this id.
        """
        mid = parse_id("message_id", id)
        row = await self._db.run(q.find_message(self.principal, mid), rows=1)
        return _rows.one(_rows.messages, row, self._db.is_sqlite)

    async def delete_message(self, id: Id) -> None:
        """Soft-delete one message.

        Raises:
            MessageNotFound: no visible message has this id.
        """
        mid = parse_id("message_id", id)
        await self._db.run(_delete(self.principal, mid, q.now()), write=True, rows=1)

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
        return await self._settle(id, values, allow_model=model is not None, rows=content_rows(parsed))

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
        sqlite = self._db.is_sqlite
        plan = q.conversation_messages(self.principal, cid, complete=False, one_statement=not sqlite)
        return _rows.messages(await self._db.run(plan), sqlite, cid)

    # -- internals -----------------------------------------------------------------------------

    async def _settle(
        self, id: Id, values: dict[str, Any], *, allow_model: bool = False, rows: int = 1
    ) -> Message:
        mid = parse_id("message_id", id)
        values["updated_at"] = q.now()
        row = await self._db.run(_settle(self.principal, mid, values, allow_model), write=True, rows=rows)
        message = _rows.one(_rows.messages, row, self._db.is_sqlite)
        return Message.model_validate({**message.model_dump(), **values})

    def _batch(self, messages: Sequence[NewMessage | Mapping[str, Any]]) -> list[NewMessage]:
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
            raise InvalidInputError("messages", "must be a list of messages")
        if len(messages) > self._limits.messages_per_call:
            raise InvalidInputError("messages", f"at most {self._limits.messages_per_call} per call")
        batch = [
            m if type(m) is NewMessage else NewMessage.parse(m, f"messages.{i}")
            for i, m in enumerate(messages)
        ]
        keys = [m.key for m in batch if m.key is not None]
        if len(set(keys)) != len(keys):
            raise InvalidInputError("messages", "two messages in one call share a key")
        longest = self._limits.content
        for i, m in enumerate(batch):
            content = m.content
            if type(content) is not str or len(content) > longest:  # else within every limit
                self._check_content(content, f"messages.{i}.content")
        return batch


def in_batch_order(
    batch: list[NewMessage], stored: list[Row], added: list[Message], sqlite: bool
) -> list[Message]:
    """An append's answer: for each message of ``batch``, the stored one with its key, else the new one."""
    if not stored:
        return added
    by_key = {m.key: m for m in _rows.messages(stored, sqlite)}
    fresh = iter(added)
    return [by_key[m.key] if m.key in by_key else next(fresh) for m in batch]


def append(
    principal: Principal,
    hid: UUID,
    batch: list[NewMessage],
    when: datetime,
    *,
    one_statement: bool,
    alone: bool = False,
    keys_looked_up: bool = False,
    unread_keys: bool = False,
) -> Plan[tuple[list[Row], list[Message]]]:
    """Stored rows for keys already there, and the new messages, ``seq`` taken under the conversation lock.

    A batch without keys takes its ``seq`` and bumps the counters first: with ``one_statement``
    (PostgreSQL) the lock, the checks, the insert and the counters are one statement; on SQLite
    (whose writer holds the database lock) the bump answers ``last_seq`` and the insert follows.
    Keys are looked up after the lock is held, so a concurrent append of the same key is seen.
    ``alone``: the append is its transaction's whole work, so its one statement may be too.
    ``keys_looked_up``: the caller found none of the batch's keys stored, in this transaction
    (a history started in it has none).
    With ``unread_keys`` (PostgreSQL), a batch with keys is one statement too, which does not
    look its keys up; the caller runs the plan that does when one was stored (``Stmt.unread_keys``).
    """
    scope, params = q.principal_params(principal)
    keys = [] if keys_looked_up else [m.key for m in batch if m.key is not None]
    if batch and (not keys or (unread_keys and one_statement)):
        if one_statement:
            one = _append_at_once(scope, params, hid, batch, when, alone=alone, unread_keys=bool(keys))
            return [], (yield from one)
        return [], (yield from _append_bumped(scope, params, hid, batch, when))
    found = yield Stmt(sql.lock_for_append(scope), {**params, "hid": hid})
    _, cid, history_model, last_seq = running(found, hid)
    stored, fresh = yield from stored_keys(hid, batch)
    if not fresh:
        return stored, []
    if one_statement:
        return stored, (yield from _append_at_once(scope, params, hid, fresh, when))
    added, rows = _stored(fresh, cid, hid, last_seq, history_model, when, sqlite=True)
    yield Stmt(sql.INSERT_MESSAGE, rows, many=True)
    yield Stmt(
        sql.BUMP_CONVERSATION,
        {
            "cid": cid,
            "last_seq": last_seq + len(rows),
            "added": len(rows),
            "preview": fresh[-1].text[: q.PREVIEW_CHARS],
            "when": when,
        },
    )
    yield from changes.record("message.appended", cid, history_id=hid, seq=last_seq + 1, count=len(rows))
    return stored, added


def stored_keys(hid: UUID, batch: list[NewMessage]) -> Plan[tuple[list[Row], list[NewMessage]]]:
    """The stored rows of the batch's keys already in history ``hid``, and the rest of the batch."""
    keys = [m.key for m in batch if m.key is not None]
    if not keys:
        return [], batch
    stored: list[Row] = yield Stmt(sql.MESSAGES_BY_KEY, {"hid": hid, "keys": Many(keys)})
    taken = {row[13] for row in stored}
    return stored, [m for m in batch if m.key not in taken]


def running(found: list[Row], hid: UUID) -> Row:
    """The one row of an append's lock, if its history is visible and running.

    Raises:
        HistoryNotFound: no row.
        ConflictError: the history is finished.
    """
    if not found:
        raise HistoryNotFound(hid)
    check_running(hid, found[0][0])
    return found[0]


def check_running(hid: UUID, status: str) -> None:
    """Refuse to add messages to a history in ``status`` unless it is running.

    Raises:
        ConflictError: the history is finished.
    """
    if status != "running":
        raise ConflictError(f"history {hid} is {status}; start a new history to add messages")


def _append_bumped(
    scope: sql.Scope, params: dict[str, Any], hid: UUID, batch: list[NewMessage], when: datetime
) -> Plan[list[Message]]:
    bumped = yield Stmt(
        sql.bump_for_append(scope),
        {
            **params,
            "hid": hid,
            "added": len(batch),
            "preview": batch[-1].text[: q.PREVIEW_CHARS],
            "when": when,
        },
    )
    if not bumped:  # Not visible, or not running: the lock's row says which.
        running((yield Stmt(sql.lock_for_append(scope), {**params, "hid": hid})), hid)
        raise HistoryNotFound(hid)
    cid, last_seq, history_model = bumped[0]
    added, rows = _stored(batch, cid, hid, last_seq, history_model, when, sqlite=True)
    yield Stmt(sql.INSERT_MESSAGE, rows, many=True)
    yield from changes.record("message.appended", cid, history_id=hid, seq=last_seq + 1, count=len(rows))
    return added


def _append_at_once(
    scope: sql.Scope,
    params: dict[str, Any],
    hid: UUID,
    batch: list[NewMessage],
    when: datetime,
    *,
    alone: bool = False,
    unread_keys: bool = False,
) -> Plan[list[Message]]:
    """The append as one statement, which writes nothing unless the history is visible and
    running (it may then be ``alone``, see ``Stmt``), nor if it has ``unread_keys`` and one of
    them is stored."""
    ids = new_ids(len(batch))
    found = yield Stmt(
        sql.append_postgres(scope),
        {**params, **batch_params(batch, ids, hid, when)},
        alone=alone,
        unread_keys=unread_keys,
    )
    _, cid, history_model, last_seq = running(found, hid)
    yield from changes.touched(cid)  # the statement logged the append
    return inserted(batch, ids, cid, hid, last_seq, history_model, when)


def batch_params(batch: list[NewMessage], ids: list[UUID], hid: UUID, when: datetime) -> dict[str, Any]:
    """What a PostgreSQL statement that inserts ``batch`` into history ``hid`` binds: an array
    per column, the counters' change and the preview."""
    values: dict[str, list[Any]] = {
        "id": ids,
        "role": [m.role for m in batch],
        "content": [m.text for m in batch],
        "parts": [_parts(m) for m in batch],
        "model": [m.model for m in batch],
        "status": [m.status for m in batch],
        "usage": [_json(m.usage) for m in batch],
        "metadata": [_json(m.metadata) for m in batch],
        "native": [_native(m) for m in batch],
        "key": [m.key for m in batch],
    }
    return {
        **{f"{name}_values": Many(column) for name, column in values.items()},
        "hid": hid,
        "when": when,
        "added": len(batch),
        "preview": batch[-1].text[: q.PREVIEW_CHARS],
    }


def start_at_once(
    principal: Principal,
    history: dict[str, Any],
    batch: list[NewMessage],
    *,
    finish: dict[str, Any] | None = None,
    alone: bool = False,
) -> Plan[list[Message]]:
    """A new history (``history``'s values) and its first ``batch``, if any, in one PostgreSQL
    statement, which writes nothing unless the conversation is visible (it may then be
    ``alone``, see ``Stmt``). With ``finish`` (its status, usage, error and ``finished_at``),
    the history is stored finished.

    Raises:
        ConversationNotFound: no visible conversation has this id.
    """
    scope, params = q.principal_params(principal)
    cid, hid, when = history["conversation_id"], history["id"], history["created_at"]
    ids = new_ids(len(batch))
    ending = {} if finish is None else {**finish, "usage": Json(finish["usage"])}
    found = yield Stmt(
        sql.start_postgres(scope, bool(batch), finish is not None),
        {
            **params,
            **(batch_params(batch, ids, hid, when) if batch else {"hid": hid, "when": when}),
            **ending,
            "cid": cid,
            "model": history["model"],
            "system_prompts": Json(history["system_prompts"]),
            "metadata": Json(history["metadata"]),
        },
        alone=alone,
    )
    if not found:
        raise ConversationNotFound(cid)
    yield from changes.touched(cid)  # the statement logged the start (and the append and finish)
    return inserted(batch, ids, cid, hid, found[0][0], history["model"], when)


def inserted(
    batch: list[NewMessage],
    ids: list[UUID],
    cid: Any,
    hid: UUID,
    last_seq: int,
    history_model: str,
    when: datetime,
) -> list[Message]:
    """The messages a PostgreSQL statement inserted from ``batch_params(batch, ids, ...)``,
    after the conversation's ``last_seq`` it answered."""
    return _stored(batch, cid, hid, last_seq, history_model, when, ids)[0]


def _stored(
    batch: list[NewMessage],
    cid: Any,
    hid: UUID,
    last_seq: int,
    history_model: str,
    when: datetime,
    ids: list[UUID] | None = None,
    *,
    sqlite: bool = False,
) -> tuple[list[Message], list[tuple[Any, ...]]]:
    """The messages of ``batch`` as stored after ``last_seq`` (``cid`` as the driver gave it),
    with new ids unless ``ids`` are given; and with ``sqlite``, the rows of
    ``sql.INSERT_MESSAGE`` that store them there (as ``Stmt`` takes positional rows: in its
    parameters' order, each value as ``sqlite_value`` encodes it).

    One pass builds both, each message from the values this call just validated (no row is
    read back). For a batch of 100 that takes about 60% of the time of a dict per row that the
    driver then encoded by name, a tenth of what such an append costs in all.
    """
    cid = as_uuid(cid)
    # What every row shares is encoded once.
    shared = (sqlite_value(cid), sqlite_value(hid)) if sqlite else ()
    stamp = sqlite_value(when) if sqlite else None
    messages: list[Message] = []
    rows: list[tuple[Any, ...]] = []
    message_of = _rows.message_of
    for seq, m, message_id in zip(itertools.count(last_seq + 1), batch, ids or new_ids(len(batch))):
        role, content, usage, metadata, native, key = m.role, m.content, m.usage, m.metadata, m.native, m.key
        plain = isinstance(content, str)
        if type(m) is NewMessage:  # what its ``text`` and ``parts`` answer, without their calls
            text, parts = (content, None) if plain else (flatten_content(content), content)
        else:  # a subclass's own, as ``batch_params`` and the previews store them
            text, parts = m.text, m.parts
        model = (m.model or history_model) if role == "assistant" else None
        if sqlite:
            rows.append(
                (
                    "%032x" % message_id.int,  # noqa: UP031 (``sqlite_value`` of a UUID, at half the cost of an f-string)
                    *shared,
                    seq,
                    role,
                    text,
                    # '' for NULL (see ``sql.INSERT_MESSAGE``): most messages have no parts,
                    # usage, metadata, native form or key, and a user's has no model.
                    "" if plain else sqlite_value(_parts(m)),
                    model or "",
                    m.status,
                    "" if usage is None else sqlite_value(Json(usage)),
                    "" if metadata is None else sqlite_value(Json(metadata)),
                    "" if native is None else sqlite_value(_native(m)),
                    key or "",
                    stamp,
                )
            )
        messages.append(
            message_of(
                {
                    "id": message_id,
                    "conversation_id": cid,
                    "history_id": hid,
                    "seq": seq,
                    "role": role,
                    "content": text,
                    "parts": parts,
                    "model": model,
                    "status": m.status,
                    "error": None,
                    "usage": usage,
                    "metadata": metadata,
                    "native": native,
                    "key": key,
                    "created_at": when,
                    "updated_at": when,
                }
            )
        )
    return messages, rows


# A NULL JSON column is sent as None (no wrapper): most messages have no parts, usage or metadata.
def _json(value: Any) -> Json | None:
    return None if value is None else Json(value)


def _parts(m: NewMessage) -> Json | None:
    return None if isinstance(m.content, str) else Json(dump_parts(m.content))


def _native(m: NewMessage) -> Json | None:
    return None if m.native is None else Json(m.native.model_dump(mode="json"))


def _page(
    principal: Principal,
    cid: UUID | None,
    hid: UUID | None,
    limit: int,
    after: int | None,
    newest_first: bool,
    one_statement: bool,
) -> Plan[list[Row]]:
    """A page of messages. None found, the conversation or history is asked for, to tell a
    missing or foreign id from an empty page at one moment: in the read's transaction on
    SQLite; on PostgreSQL (``one_statement``) with the page read again in the same statement,
    since a conversation may become visible with its messages at once (imported meanwhile
    with its own ids)."""
    scope, params = q.principal_params(principal)
    shape = (scope, cid is not None, hid is not None, newest_first, after is not None)
    values = {**params, "cid": cid, "hid": hid, "after": after, "limit": limit + 1}
    rows: list[Row] = yield Stmt(sql.list_messages(*shape), values)
    if rows:
        return rows
    if one_statement:
        found = yield Stmt(sql.page_with_parent_postgres(*shape), values)
        parent, rows = q.row_then_children(found, sql.MESSAGE_COLUMNS)
        if hid is not None:
            if parent is None:
                raise HistoryNotFound(hid)
            same_conversation(cid, parent)
        elif parent is None:
            assert cid is not None
            raise ConversationNotFound(cid)
        return rows
    if hid is None:
        assert cid is not None
        yield from q.find_conversation(principal, cid)
        return rows
    parent = yield from q.find_history(principal, hid)
    same_conversation(cid, parent)
    return rows


def same_conversation(cid: UUID | None, history: Row) -> None:
    """Raises InvalidInputError unless the history's row is of conversation ``cid`` (when given)."""
    if cid is not None and as_uuid(history[1]) != cid:
        raise InvalidInputError("history_id", "is not in that conversation")


def _delete(principal: Principal, mid: UUID, when: datetime) -> Plan[None]:
    row = yield from q.find_message(principal, mid, lock=True)
    # On PostgreSQL a concurrent delete may have committed while this one waited for the lock,
    # unseen by the read above; the update sees it, and only one of the two deletes succeeds.
    if not (yield Stmt(sql.DELETE_MESSAGE, {"mid": mid, "when": when}, count=True)):
        raise MessageNotFound(mid)
    yield from q.refresh_summary(row[1], when, removed=1)
    yield from changes.record("message.deleted", row[1], history_id=row[2], message_id=mid, seq=row[3])


def _settle(principal: Principal, mid: UUID, values: dict[str, Any], allow_model: bool) -> Plan[Row]:
    row = yield from q.find_message(principal, mid, lock=True)
    role, status = row[4], row[8]
    if status != "pending":
        raise ConflictError(f"message {mid} is {status}, not pending")
    if allow_model and role != "assistant":
        raise InvalidInputError("model", f"a {role} message has no model")
    params = _rows.row_params(_rows.MESSAGE_FIELDS, row)
    for name, value in values.items():
        params[name] = Json(value) if name == "parts" else value
    params["mid"] = mid
    # A concurrent call may have settled it while this one waited for the lock (PostgreSQL).
    if not (yield Stmt(sql.SETTLE_MESSAGE, params, count=True)):
        raise ConflictError(f"message {mid} is no longer pending")
    if "content" in values:
        for statement in sql.REINDEX_MESSAGE:
            yield Stmt(statement, {"mid": mid})
    yield from q.refresh_summary(row[1], values["updated_at"])
    kind: ChangeKind = "message.completed" if values["status"] == "complete" else "message.failed"
    yield from changes.record(kind, row[1], history_id=row[2], message_id=mid, seq=row[3])
    return row
