"""History operations of a scope."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import EllipsisType
from typing import Any, Literal
from uuid import UUID

from chatmemory import _changes as changes
from chatmemory import _queries as q
from chatmemory import _rows
from chatmemory import _sql as sql
from chatmemory._ids import new_id, new_ids
from chatmemory._messages import append, batch_params, inserted, start_at_once
from chatmemory._plan import Json, Plan, Row, Stmt
from chatmemory._scope_base import Id, ScopeBase, size_rows
from chatmemory._validation import check_object, model_name, parse_id, prompts
from chatmemory.errors import ConflictError, ConversationNotFound, HistoryNotFound, InvalidInputError
from chatmemory.models import ChangeKind, History, HistoryDetail, Message, NewMessage
from chatmemory.principal import Principal

_FINISHED = ("completed", "failed", "cancelled")
_JSON_FIELDS = ("system_prompts", "metadata", "usage")


class HistoryOps(ScopeBase):
    async def start_history(
        self,
        conversation_id: Id,
        *,
        model: str,
        system_prompts: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> History:
        """Start recording one agent run driven by ``model``.

        Raises:
            ConversationNotFound: no visible conversation has this id.
            InvalidInputError: empty model, or malformed prompts or metadata.
        """
        cid = parse_id("conversation_id", conversation_id)
        values = new_history(cid, model, system_prompts, metadata, q.now())
        rows = 1 + size_rows(values["system_prompts"], values["metadata"])
        plan = started(self.principal, values, [], not self._db.is_sqlite, alone=True)
        await self._db.run(plan, write=True, rows=rows)
        return History.model_validate(values)

    async def finish_history(
        self,
        id: Id,
        *,
        status: Literal["completed", "failed", "cancelled"] = "completed",
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> History:
        """Close a running history; nothing more can be appended to it.

        Raises:
            HistoryNotFound: no visible history has this id.
            ConflictError: the history is already finished.
            InvalidInputError: unknown status, or malformed usage or error.
        """
        hid = parse_id("history_id", id)
        if status not in _FINISHED:
            raise InvalidInputError("status", f"must be one of {', '.join(_FINISHED)}")
        when = q.now()
        values = {
            "status": status,
            "usage": check_object("usage", usage),
            "error": self._text("error", error),
            "finished_at": when,
            "updated_at": when,
        }
        return await self._change_running(hid, values)

    async def update_history(
        self,
        id: Id,
        *,
        model: str | EllipsisType = ...,
        system_prompts: Sequence[str] | EllipsisType | None = ...,
        metadata: Mapping[str, Any] | EllipsisType | None = ...,
    ) -> History:
        """Change a running history's model, system prompts or metadata (``...`` leaves one as is).

        Adapters use this when a run's driver is only known after it starts. Messages already
        stored keep the model they were stored with.

        Raises:
            HistoryNotFound: no visible history has this id.
            ConflictError: the history is finished.
            InvalidInputError: empty model, or malformed prompts or metadata.
        """
        hid = parse_id("history_id", id)
        values: dict[str, Any] = {"updated_at": q.now()}
        if model is not ...:
            values["model"] = model_name("model", model)
        if system_prompts is not ...:
            values["system_prompts"] = prompts(system_prompts)
        if metadata is not ...:
            values["metadata"] = check_object("metadata", metadata)
        return await self._change_running(hid, values)

    async def _change_running(self, hid: UUID, values: dict[str, Any]) -> History:
        rows = 1 + size_rows(*values.values())
        plan = change_running(self.principal, hid, values, one_statement=not self._db.is_sqlite, alone=True)
        row = await self._db.run(plan, write=True, rows=rows)
        return _rows.one(_rows.histories, row, self._db.is_sqlite)

    async def get_history(self, id: Id, *, messages: bool = True) -> HistoryDetail:
        """A history, with its messages in order unless ``messages=False``.

        Raises:
            HistoryNotFound: no visible history has this id.
        """
        hid = parse_id("history_id", id)
        row, message_rows = await self._db.run(
            _detail(self.principal, hid, messages, not self._db.is_sqlite), rows=None if messages else 1
        )
        history = _rows.one(_rows.histories, row, self._db.is_sqlite)
        loaded = _rows.messages(message_rows, self._db.is_sqlite) if messages else None
        return HistoryDetail(**history.model_dump(), messages=loaded)

    async def delete_history(self, id: Id) -> None:
        """Soft-delete a history and its messages, in one transaction.

        Raises:
            HistoryNotFound: no visible history has this id.
        """
        hid = parse_id("history_id", id)
        await self._db.run(_delete(self.principal, hid, q.now()), write=True)


def new_history(
    conversation_id: UUID | None,
    model: str,
    system_prompts: Sequence[str] | None,
    metadata: Mapping[str, Any] | None,
    when: datetime,
) -> dict[str, Any]:
    """A new running history's values, checked (``conversation_id`` may be filled in later).

    Raises:
        InvalidInputError: empty model, or malformed prompts or metadata.
    """
    return {
        "id": new_id(),
        "conversation_id": conversation_id,
        "model": model_name("model", model),
        "system_prompts": prompts(system_prompts),
        "metadata": check_object("metadata", metadata),
        "status": "running",
        "created_at": when,
        "updated_at": when,
    }


def _start(principal: Principal, values: dict[str, Any], *, touch: bool = True) -> Plan[None]:
    """Start a history (SQLite); ``touch`` sets its conversation's ``updated_at``, which a caller
    that appends to it in the same transaction leaves to the append.

    Raises:
        ConversationNotFound: no visible conversation has this id.
    """
    cid = values["conversation_id"]
    scope, visibility = q.principal_params(principal)
    params = {
        **visibility,
        "id": values["id"],
        "cid": cid,
        "model": values["model"],
        "system_prompts": Json(values["system_prompts"]),
        "metadata": Json(values["metadata"]),
        "when": values["created_at"],
    }
    if not (yield Stmt(sql.start_history_sqlite(scope), params, count=True)):
        raise ConversationNotFound(cid)
    if touch:
        yield Stmt(sql.TOUCH_CONVERSATION, {"cid": cid, "when": values["created_at"]})
    yield from changes.record("history.started", cid, history_id=values["id"])


def started(
    principal: Principal,
    history: dict[str, Any],
    batch: list[NewMessage],
    one_statement: bool,
    *,
    finish: dict[str, Any] | None = None,
    alone: bool = False,
) -> Plan[tuple[list[Row], list[Message]]]:
    """A history started, then ``batch`` appended to it, then with ``finish`` (its status,
    usage, error and ``finished_at``) finished: with ``one_statement`` (PostgreSQL), in one
    statement, which may be ``alone`` (see ``Stmt``). A new history has no stored keys."""
    if one_statement:
        return [], (yield from start_at_once(principal, history, batch, finish=finish, alone=alone))
    # A history's first messages touch its conversation.
    yield from _start(principal, history, touch=not batch)
    stored: list[Row] = []
    added: list[Message] = []
    if batch:
        when = history["created_at"]
        stored, added = yield from append(
            principal, history["id"], batch, when, one_statement=False, keys_looked_up=True
        )
    if finish is not None:
        yield from change_running(principal, history["id"], {**finish, "updated_at": history["created_at"]})
    return stored, added


def change_running(
    principal: Principal,
    hid: UUID,
    values: dict[str, Any],
    *,
    one_statement: bool = False,
    alone: bool = False,
) -> Plan[Row]:
    """Set ``values`` on a running history; answers its row as the change left it.

    The check and the change are one statement; with ``one_statement`` (PostgreSQL) its log
    too, and the lock (``change_at_once``).

    Raises:
        HistoryNotFound: no visible history has this id.
        ConflictError: the history is finished.
    """
    if one_statement:
        row, _ = yield from change_at_once(principal, hid, values, alone=alone)
        return row
    scope, visibility = q.principal_params(principal)
    changed = yield Stmt(
        sql.change_history_sqlite(scope, tuple(values)), {**visibility, **_params(values), "hid": hid}
    )
    if not changed:  # Not visible, or not running: its row says which.
        _check_running(hid, (yield from q.find_history(principal, hid))[5])
        raise ConflictError(f"history {hid} is not running")  # never: the write lock is held
    yield from changes.record(_kind(values), changed[0][1], history_id=hid)
    return changed[0]  # type: ignore[no-any-return]


def change_at_once(
    principal: Principal,
    hid: UUID,
    values: dict[str, Any],
    batch: list[NewMessage] | None = None,
    *,
    alone: bool = False,
    unread_keys: bool = False,
) -> Plan[tuple[Row, list[Message]]]:
    """Set ``values`` (with ``updated_at``) on a running history in one PostgreSQL statement,
    after appending ``batch`` when given (messages without keys, or with ``unread_keys``, see
    ``Stmt``); answers the history's row as the change left it and the messages appended.

    The lock, the checks, the append, the change and their log are one statement, which writes
    nothing unless the history is visible and running: it may then be its call's whole write
    (``alone``, see ``Stmt``). It sets only ``values``, so it answers the row as it left it,
    with what a concurrent change committed while it waited for the lock.

    Raises:
        HistoryNotFound: no visible history has this id.
        ConflictError: the history is finished.
    """
    scope, visibility = q.principal_params(principal)
    when = values["updated_at"]
    ids = new_ids(len(batch)) if batch else []
    found = yield Stmt(
        sql.change_history_postgres(scope, tuple(values), bool(batch)),
        {
            **visibility,
            **(batch_params(batch, ids, hid, when) if batch else {}),
            **_params(values),
            "hid": hid,
            "kind": _kind(values),
        },
        alone=alone,
        unread_keys=unread_keys,
    )
    if not found:
        raise HistoryNotFound(hid)
    width = len(_rows.HISTORY_FIELDS)
    row, last_seq, changed = found[0][:width], found[0][width], found[0][width + 1 :]
    _check_running(hid, row[5])
    if changed[0] is None:  # locked while running, so never: no answer for a change not made
        raise ConflictError(f"history {hid} is already finished")
    yield from changes.touched(row[1])  # the statement logged the change (and the append)
    added = inserted(batch, ids, row[1], hid, last_seq, row[2], when) if batch else []
    return tuple(changed), added


def _kind(values: dict[str, Any]) -> ChangeKind:
    return "history.finished" if "finished_at" in values else "history.updated"


def _params(values: dict[str, Any]) -> dict[str, Any]:
    return {name: Json(value) if name in _JSON_FIELDS else value for name, value in values.items()}


def _check_running(hid: UUID, status: str) -> None:
    if status != "running":
        raise ConflictError(f"history {hid} is already {status}")


def _detail(
    principal: Principal, hid: UUID, messages: bool, one_statement: bool
) -> Plan[tuple[Row, list[Row]]]:
    """The history's row and (when ``messages``) its messages, from one snapshot (with
    ``one_statement``, PostgreSQL's, in one statement): a history read as running has none of
    the messages its finish appended, one read as finished has them all."""
    if one_statement and messages:
        scope, params = q.principal_params(principal)
        rows = yield Stmt(sql.history_with_messages_postgres(scope), {**params, "hid": hid}, bulk=True)
        row, loaded = q.row_then_children(rows, sql.MESSAGE_COLUMNS)
        if row is None:
            raise HistoryNotFound(hid)
        return row, loaded
    row = yield from q.find_history(principal, hid)
    loaded = (yield Stmt(sql.HISTORY_MESSAGES, {"hid": hid}, bulk=True)) if messages else []
    return row, loaded


def _delete(principal: Principal, hid: UUID, when: datetime) -> Plan[None]:
    row = yield from q.find_history(principal, hid, lock=True)
    # A concurrent delete may have committed while this one waited for the lock (PostgreSQL).
    if not (yield Stmt(sql.DELETE_HISTORY, {"hid": hid, "when": when}, count=True)):
        raise HistoryNotFound(hid)
    removed = yield Stmt(sql.DELETE_HISTORY_MESSAGES, {"hid": hid, "when": when}, count=True)
    yield from q.refresh_summary(row[1], when, removed=removed)
    yield from changes.record("history.deleted", row[1], history_id=hid)
