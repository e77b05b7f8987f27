"""The change log: what write plans record, and how watchers read it back as events.

Each write plan records its changes with ``yield from record(...)``; ``logged`` (which runs
every write) holds them and writes them all in one statement at the end of the transaction,
or hands them to a statement that logs them itself (a PostgreSQL append), so the change rows
commit with the change or not at all. A message change names a ``seq`` range of its
conversation (an append of many messages is one row); a reader expands it into one event
per message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from chatmemory import _cursor, _rows
from chatmemory import _queries as q
from chatmemory import _sql as sql
from chatmemory._ids import as_uuid
from chatmemory._plan import Many, Plan, Row, Stmt, postgres_value, sqlite_value
from chatmemory.errors import ConversationNotFound, InvalidInputError
from chatmemory.models import ChangeEvent, ChangeKind, Message
from chatmemory.principal import Principal

_CURSOR = "w"
NOTE_MAX = 100
"""The most conversations a notification names; beyond, it wakes every watcher."""
_READ_ROWS = 200
_READ_EVENTS = 1000
"""A read stops at the change whose events pass this many (an append of many is one change)."""
_HIDDEN_ROWS = 1000


def record(
    kind: ChangeKind,
    conversation_id: Any,
    *,
    history_id: Any = None,
    message_id: Any = None,
    seq: int | None = None,
    count: int | None = None,
) -> Plan[None]:
    """Record a change of this transaction (written when it ends, see ``logged``).

    A message change names ``count`` messages (default one) from ``seq`` on.
    """
    if seq is not None and count is None:
        count = 1
    yield Stmt(
        sql.RECORD_CHANGE,
        {
            "cid": conversation_id,
            "kind": kind,
            "hid": history_id,
            "mid": message_id,
            "seq": seq,
            "count": count,
        },
    )


def touched(conversation_id: Any) -> Plan[None]:
    """Say that a statement of this transaction logged a change of this conversation itself,
    so watchers of it are woken when the transaction commits."""
    yield Stmt(sql.RECORD_CHANGE, {"cid": conversation_id, "kind": None})


def note(token: str, conversation_ids: Collection[UUID] | None) -> str:
    """A notification's payload: the store that wrote, then the conversations changed (all if
    there are too many to name)."""
    if conversation_ids is None or len(conversation_ids) > NOTE_MAX:
        return f"{token} *"
    return " ".join((token, *map(str, conversation_ids)))


def read_note(payload: str) -> tuple[str, set[UUID] | None]:
    """The store and the conversations a payload names (``None``: any conversation)."""
    token, *named = payload.split() or [""]
    if not named or "*" in named:
        return token, None
    try:
        return token, {UUID(c) for c in named}
    except ValueError:
        return token, None


def _log_params(pending: list[dict[str, Any]], token: str) -> dict[str, Any]:
    """The ``log_`` parameters of a statement that writes ``pending`` changes (and notifies
    ``token``, which tells the store that wrote them from others)."""
    return {
        "log_k": len(pending),
        "log_note": note(token, {_uuid(c["cid"]) for c in pending}),
        "log_when": datetime.now(UTC),
        "log_cids": Many([_uuid(c["cid"]) for c in pending]),
        "log_kinds": Many([c["kind"] for c in pending]),
        "log_hids": Many([None if c["hid"] is None else _uuid(c["hid"]) for c in pending]),
        "log_mids": Many([None if c["mid"] is None else _uuid(c["mid"]) for c in pending]),
        "log_seqs": Many([c["seq"] for c in pending]),
        "log_counts": Many([c["count"] for c in pending]),
    }


def logged(plan: Plan[Any], token: str = "", *, sqlite: bool = False) -> Plan[Any]:
    """``plan`` with the changes it records written in its transaction, in the order recorded.

    A statement with ``log_`` parameters (the PostgreSQL append) writes those recorded
    before it; the rest are written after the plan's last statement: on PostgreSQL by one
    statement, on SQLite (``sqlite``) by one insert run for each. Answers the
    plan's result and the conversations whose changes were logged.
    """
    pending: list[dict[str, Any]] = []
    changed: set[UUID] = set()
    try:
        stmt = next(plan)
        while True:
            answer: Any = []
            if stmt.sql is not sql.RECORD_CHANGE:
                if "log_k" in stmt.sql.names:
                    assert isinstance(stmt.params, dict)
                    stmt = dataclasses.replace(stmt, params={**stmt.params, **_log_params(pending, token)})
                    pending = []
                answer = yield stmt
            else:
                assert isinstance(stmt.params, dict)
                changed.add(_uuid(stmt.params["cid"]))
                if stmt.params["kind"] is not None:
                    pending.append(stmt.params)
            stmt = plan.send(answer)
    except StopIteration as done:
        result = done.value
    finally:
        plan.close()
    if pending and sqlite:
        when = datetime.now(UTC)
        yield Stmt(sql.LOG_CHANGE, [{**change, "when": when} for change in pending], many=True)
    elif pending:
        yield Stmt(sql.LOG_CHANGES, _log_params(pending, token))
    return result, changed


async def log_on(connection: AsyncConnection, sqlite: bool, kind: ChangeKind, conversation_id: UUID) -> None:
    """Log one change in a transaction SQLAlchemy runs (an import), as ``logged`` would."""
    change = {"cid": conversation_id, "kind": kind, "hid": None, "mid": None, "seq": None, "count": None}
    if sqlite:
        row = {**change, "when": datetime.now(UTC)}
        await connection.exec_driver_sql(sql.LOG_CHANGE.sqlite, {k: sqlite_value(v) for k, v in row.items()})
    else:
        params = _log_params([change], "")
        statement = sql.LOG_CHANGES
        await connection.exec_driver_sql(
            statement.postgres, tuple(postgres_value(params[n]) for n in statement.names)
        )


# -- reading ----------------------------------------------------------------------------------


def parse_cursor(after: str) -> tuple[int, int, str | None]:
    """A watch position: every change before row ``id`` was delivered, and ``done`` events of
    it; and the identity of the database that handed it out (``store()``), ``None`` for a
    cursor handed out before migration 0011.

    Raises:
        InvalidInputError: ``after`` is not a cursor from a change event.
    """
    try:
        change_id, done, store = _cursor.decode(_CURSOR, after, 3)
    except InvalidInputError:
        try:
            change_id, done, store = *_cursor.decode(_CURSOR, after, 2), None
        except InvalidInputError:
            raise InvalidInputError("after", "is not a cursor from a change event") from None
    if not isinstance(store, str | None) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 for v in (change_id, done)
    ):
        raise InvalidInputError("after", "is not a cursor from a change event")
    return change_id, done, store


def cursor(change_id: int, done: int, store: str) -> str:
    return _cursor.encode(_CURSOR, change_id, done, store)


def store() -> Plan[str]:
    """This database's identity as its cursors carry it: the first 16 hex digits of the id
    migration 0011 made."""
    rows = yield Stmt(sql.STORE_ID, {})
    return _uuid(rows[0][0]).hex[:16]


def head(principal: Principal, cid: UUID | None) -> Plan[tuple[int, int]]:
    """The position after every committed change (of a visible conversation, when ``cid``).

    Raises:
        ConversationNotFound: ``cid`` names no visible conversation.
    """
    if cid is not None:
        yield from q.find_conversation(principal, cid)
    rows = yield Stmt(sql.CHANGE_HEAD, {})
    return int(rows[0][0]) + 1, 0


def read(
    principal: Principal,
    cid: UUID | None,
    position: tuple[int, int],
    *,
    counted: bool = True,
    foreign: bool = False,
) -> Plan[tuple[list[Row], int, bool]]:
    """Change rows from ``position`` on with the messages they name, the change id the next
    read starts at, and whether more may wait there (else it is after every change committed).

    ``counted`` checks that no change from ``position`` on was purged; a read that goes on
    where the last stopped (it said more may wait) leaves it out, since that read checked up
    to the head already, and counting again at every step would count a long backlog over and over.
    ``foreign`` says the position is from a cursor another database handed out, which this one
    cannot resume from: refused as a position ahead of every change is, after the read.

    Raises:
        ConversationNotFound: ``cid`` names a conversation the principal cannot see, or one
            deleted whose changes have all been delivered.
        InvalidInputError: ``position`` is ahead of every change or ``foreign``, or changes
            after it that the watch would show were purged.
    """
    scope, params = q.principal_params(principal)
    rows: list[Row] = yield Stmt(
        sql.read_changes(scope, cid is not None, counted),
        {**params, "cid": cid, "after": position[0], "limit": _READ_ROWS, "budget": _READ_EVENTS},
    )
    head, kept, live = int(rows[0][-2]), rows[0][-1], rows[0][0]
    if position[0] > head + 1:  # no change event or change_cursor() of this database gave it
        raise InvalidInputError("after", "is ahead of every change of this store")
    if foreign:
        raise InvalidInputError("after", "is a cursor of another database")
    if cid is not None and live is None:
        raise ConversationNotFound(cid)
    rows = [row for row in rows if row[1] is not None]
    if counted and cid is not None and any(row[3] == "conversation.created" for row in rows):
        # Begun after the cursor, or purged and restored (imported again) since: then its
        # deletion went with the purge, and changes are missing after the cursor.
        found = yield Stmt(sql.CHANGES_KEPT, {"after": position[0], "head": head})
        kept = found[0][0]
    # A purge removed changes not yet delivered: the deletion of a conversation the watcher
    # shows may be among them, and would never come.
    if kept is not None and int(kept) < head + 1 - position[0]:
        raise InvalidInputError("after", "is older than the changes this store keeps (some were purged)")
    # A deleted conversation's watch ends once its last change (the deletion) is delivered.
    if (
        cid is not None
        and not live
        and not any(row[1] > position[0] or _size(row) > position[1] for row in rows)
    ):
        raise ConversationNotFound(cid)
    sizes = {row[1]: _size(row) for row in rows}
    if len(sizes) == _READ_ROWS or sum(sizes.values()) >= _READ_EVENTS:
        return rows, int(rows[-1][1]) + 1, True
    # Nothing up to the head is left, however many changes of others the read went past.
    return rows, max(head + 1, int(rows[-1][1]) + 1 if rows else position[0]), False


def hidden(principal: Principal, after: int, until: int) -> Plan[set[UUID]]:
    """Conversations the principal cannot see with changes from ``after`` up to ``until``
    (exclusive); at most ``_HIDDEN_ROWS``."""
    scope, params = q.principal_params(principal)
    rows: list[Row] = yield Stmt(
        sql.hidden_changes(scope), {**params, "after": after, "until": until, "limit": _HIDDEN_ROWS}
    )
    return {_uuid(row[0]) for row in rows}


def _size(row: Row) -> int:
    """How many events a change row makes."""
    return 1 if row[7] is None else int(row[7])


def events(rows: Sequence[Row], position: tuple[int, int], sqlite: bool, store: str) -> list[ChangeEvent]:
    """The events of ``read``'s rows after ``position``, one per message of a message change,
    their cursors carrying ``store``."""
    live = iter(_rows.messages([row[10:-2] for row in rows if row[10] is not None and row[9]], sqlite))
    # change id -> (its row, seq -> (message id, history id, the live message or None))
    changes: dict[int, tuple[Row, dict[int, tuple[UUID, UUID, Message | None]]]] = {}
    for row in rows:
        entry = changes.setdefault(row[1], (row, {}))
        if row[10] is not None:
            entry[1][int(row[13])] = (_uuid(row[10]), _uuid(row[12]), next(live) if row[9] else None)
    out: list[ChangeEvent] = []
    for change_id, (row, stored) in changes.items():
        cid, kind, hid, mid, seq, _count, at = row[2:9]
        history_id = None if hid is None else _uuid(hid)
        message_id = None if mid is None else _uuid(mid)
        first = position[1] if change_id == position[0] else 0
        for n in range(first, _size(row)):
            this_seq = None if seq is None else int(seq) + n
            found = None if this_seq is None else stored.get(this_seq)
            if found is None:
                event_mid, event_hid, message = message_id, history_id, None
            else:
                event_mid, event_hid, message = found
                if kind == "message.deleted":
                    message = None
            out.append(
                ChangeEvent(
                    kind=kind,
                    conversation_id=_uuid(cid),
                    cursor=cursor(change_id, n + 1, store),
                    history_id=event_hid,
                    message_id=event_mid,
                    seq=this_seq,
                    at=_timestamp(at),
                    message=message,
                )
            )
    return out


def _uuid(value: Any) -> UUID:
    """An id as a plan holds it (hex text on SQLite)."""
    return value if isinstance(value, UUID) else as_uuid(str(value))


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return _rows.utc_of_text(str(value))
