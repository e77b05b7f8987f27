"""Recording runs in few transactions: a whole run in one call (conversation, history, messages,
finish), or a run recorded as it goes with its first messages and its last ones each in the
transaction that starts or finishes its history."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from chatmemory import _queries as q
from chatmemory import _rows
from chatmemory import _sql as sql
from chatmemory._conversations import insert
from chatmemory._histories import change_at_once, change_running, new_history, started
from chatmemory._ids import as_uuid, new_id
from chatmemory._messages import MessageOps, append, in_batch_order
from chatmemory._plan import Plan, Row, Stmt
from chatmemory._scope_base import Id, rows_of, size_rows
from chatmemory._validation import check_object, dump_parts, parse_id
from chatmemory.errors import InvalidInputError
from chatmemory.models import History, Message, NewMessage
from chatmemory.principal import Principal

__all__ = ["RecordedRun", "RunOps"]

_FINISHED = ("completed", "failed", "cancelled")
Status = Literal["completed", "failed", "cancelled"]


class RecordedRun(BaseModel):
    """What ``record_run``, ``start_run`` or ``finish_run`` wrote: the conversation (``created``
    when the call started it), the history as the call left it (running after ``start_run``,
    finished otherwise) and the messages the call appended, in order.

    ``resent`` when ``record_run`` found the run recorded already (a call sent again, see
    ``record_run``) and wrote nothing: ``history`` and ``messages`` are then the stored ones."""

    model_config = ConfigDict(frozen=True)

    conversation_id: UUID
    created: bool
    history: History
    messages: list[Message]
    resent: bool = False


class RunOps(MessageOps):
    async def record_run(
        self,
        conversation_id: Id | None = None,
        *,
        model: str,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        status: Status = "completed",
        title: str | None = None,
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
        system_prompts: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        once: bool = False,
    ) -> RecordedRun:
        """Record one finished run, all or nothing, in one transaction.

        Starts a conversation titled ``title`` unless ``conversation_id`` names one, starts a
        history driven by ``model``, appends ``messages`` and finishes the history with
        ``status``. Either everything is written or nothing is.

        Each call records a run of its own (a message's ``key`` is unique within its history
        only), unless ``once``: then a call with ``conversation_id`` whose messages all have a
        ``key`` is safe to send again (after a lost answer, say). If that conversation holds a
        history of ``model``, finished with ``status``, whose live messages are these (the same
        keys, roles and contents, in order), nothing is written and that run is answered,
        ``resent``. Looking for it costs a probe of the key index per history of the
        conversation.

        Raises:
            ConversationNotFound: ``conversation_id`` names no visible conversation.
            InvalidInputError: a malformed argument or message; nothing is written.
        """
        if status not in _FINISHED:
            raise InvalidInputError("status", f"must be one of {', '.join(_FINISHED)}")
        if conversation_id is not None and title is not None:
            raise InvalidInputError(
                "title", "is only for a new conversation; leave it out with conversation_id"
            )
        batch = self._batch(messages)
        cid = None if conversation_id is None else parse_id("conversation_id", conversation_id)
        when = q.now()
        started = new_history(None, model, system_prompts, metadata, when)
        finish = {
            "status": status,
            "usage": check_object("usage", usage),
            "error": self._text("error", error),
            "finished_at": when,
        }
        new_title = self._title(title)
        if cid is None:
            cid = new_id()
            conversation: dict[str, Any] | None = {
                "id": cid,
                "owner_id": self.principal.id,
                "tenant_id": self.principal.tenant,
                "title": new_title,
                "metadata": {},
                "created_at": when,
            }
        else:
            conversation = None
        history_values = {**started, "conversation_id": cid}
        look = once and conversation is None and bool(batch) and all(m.key is not None for m in batch)
        postgres = not self._db.is_sqlite
        plan = _record(self.principal, conversation, history_values, batch, finish, postgres, look)
        rows = rows_of(batch) + size_rows(started["system_prompts"], started["metadata"], *finish.values())
        before, stored, added = await self._db.run(plan, write=True, rows=rows)
        if before is not None:
            sqlite = self._db.is_sqlite
            return RecordedRun(
                conversation_id=cid,
                created=False,
                history=_rows.one(_rows.histories, before, sqlite),
                messages=_rows.messages(stored, sqlite),
                resent=True,
            )
        history = History.model_validate({**history_values, **finish})
        return RecordedRun(
            conversation_id=cid,
            created=conversation_id is None,
            history=history,
            messages=in_batch_order(batch, stored, added, self._db.is_sqlite),
        )

    async def start_run(
        self,
        conversation_id: Id,
        *,
        model: str,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        system_prompts: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RecordedRun:
        """Start a history and append its first messages, in one transaction.

        What ``start_history`` then ``append_messages`` do, for an adapter that records a run as
        it goes: the run's first messages are stored in the transaction that starts its history.
        The history stays ``running``. Either everything is written or nothing is.

        Raises:
            ConversationNotFound: no visible conversation has this id.
            InvalidInputError: a malformed argument or message; nothing is written.
        """
        batch = self._batch(messages)
        cid = parse_id("conversation_id", conversation_id)
        history = new_history(cid, model, system_prompts, metadata, q.now())
        plan = started(self.principal, history, batch, not self._db.is_sqlite, alone=True)
        rows = rows_of(batch) + size_rows(history["system_prompts"], history["metadata"])
        stored, added = await self._db.run(plan, write=True, rows=rows)
        return RecordedRun(
            conversation_id=cid,
            created=False,
            history=History.model_validate(history),
            messages=in_batch_order(batch, stored, added, self._db.is_sqlite),
        )

    async def finish_run(
        self,
        history_id: Id,
        *,
        messages: Sequence[NewMessage | Mapping[str, Any]] = (),
        status: Status = "completed",
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> RecordedRun:
        """Append a running history's last messages and finish it, in one transaction.

        What ``append_messages`` then ``finish_history`` do, for an adapter that records a run
        as it goes: the run's last messages are stored in the transaction that closes its
        history. Either everything is written or nothing is.

        Raises:
            HistoryNotFound: no visible history has this id.
            ConflictError: the history is already finished; nothing is written.
            InvalidInputError: a malformed argument or message; nothing is written.
        """
        hid = parse_id("history_id", history_id)
        if status not in _FINISHED:
            raise InvalidInputError("status", f"must be one of {', '.join(_FINISHED)}")
        batch = self._batch(messages)
        when = q.now()
        finish = {
            "status": status,
            "usage": check_object("usage", usage),
            "error": self._text("error", error),
            "finished_at": when,
            "updated_at": when,
        }
        postgres = not self._db.is_sqlite
        rows = rows_of(batch) + size_rows(*finish.values())
        row, stored, added = await self._db.run(
            _finished(self.principal, hid, batch, finish, postgres, unread_keys=postgres),
            write=True,
            rows=rows,
            fallback=lambda: _finished(self.principal, hid, batch, finish, postgres),
        )
        history = _rows.one(_rows.histories, row, self._db.is_sqlite)
        return RecordedRun(
            conversation_id=history.conversation_id,
            created=False,
            history=history,
            messages=in_batch_order(batch, stored, added, self._db.is_sqlite),
        )


def _record(
    principal: Principal,
    conversation: dict[str, Any] | None,
    history: dict[str, Any],
    batch: list[NewMessage],
    finish: dict[str, Any],
    one_statement: bool,
    look: bool,
) -> Plan[tuple[Row | None, list[Row], list[Message]]]:
    """A new conversation (when given), a history started, appended to and finished: with
    ``one_statement`` (PostgreSQL), the history in one statement, the call's whole write unless
    a conversation is inserted first or the run is looked for first (``look``, ``_recorded``).
    Answers the history found then and its messages' rows, or ``None``, the stored rows and the
    new messages."""
    alone = True
    if conversation is not None:
        yield from insert(conversation)
        alone = False
    elif look:
        found = yield from _recorded(principal, history, batch, finish["status"], lock=one_statement)
        if found is not None:
            return found[0], found[1], []
        alone = False
    stored, added = yield from started(principal, history, batch, one_statement, finish=finish, alone=alone)
    return None, stored, added


def _recorded(
    principal: Principal, history: dict[str, Any], batch: list[NewMessage], status: str, *, lock: bool
) -> Plan[tuple[Row, list[Row]] | None]:
    """The row and messages' rows of a finished history like ``history`` (the same conversation,
    model and ``status``) whose live messages are ``batch``'s keys, roles and contents in order: the
    run a re-sent ``record_run`` recorded. The conversation is locked first (``lock``, PostgreSQL;
    SQLite's writer holds the database), so two calls sent at once record the run once.

    Raises:
        ConversationNotFound: no visible conversation has this id.
    """
    cid = history["conversation_id"]
    yield from q.find_conversation(principal, cid, lock=lock)
    params = {"cid": cid, "model": history["model"], "status": status, "key": batch[0].key}
    for row in (yield Stmt(sql.RECORDED_WITH_KEY, params)):
        # One more than the run's, so that a longer history is told apart without reading it all.
        rows: list[Row] = yield Stmt(
            sql.FIRST_HISTORY_MESSAGES, {"hid": as_uuid(row[0]), "limit": len(batch) + 1}
        )
        if len(rows) == len(batch) and all(_same(r, m) for r, m in zip(rows, batch, strict=True)):
            return row, rows
    return None


def _same(row: Row, message: NewMessage) -> bool:
    """Whether a stored message's row holds ``message``'s key, role and content: its text, and its
    parts when it has some (a tool call has no text, so runs that differ only in a call's
    arguments have the same texts)."""
    if (row[13], row[4], row[5]) != (message.key, message.role, message.text):
        return False
    stored = _rows.json_text(row[6])
    parts = message.parts
    if stored is None or parts is None:
        return stored is None and parts is None
    return json.loads(stored) == dump_parts(parts)  # type: ignore[no-any-return]


def _finished(
    principal: Principal,
    hid: UUID,
    batch: list[NewMessage],
    finish: dict[str, Any],
    one_statement: bool,
    *,
    unread_keys: bool = False,
) -> Plan[tuple[Row, list[Row], list[Message]]]:
    """``batch`` appended to a running history, then the history finished: with
    ``one_statement`` (PostgreSQL), one statement that is the call's whole write, when the batch
    has no keys or may leave them ``unread_keys`` (see ``Stmt``)."""
    keyed = any(m.key is not None for m in batch)
    if one_statement and (unread_keys or not keyed):
        row, added = yield from change_at_once(principal, hid, finish, batch, alone=True, unread_keys=keyed)
        return row, [], added
    stored: list[Row] = []
    added = []
    if batch:
        stored, added = yield from append(
            principal, hid, batch, finish["updated_at"], one_statement=one_statement
        )
    row = yield from change_running(principal, hid, finish, one_statement=one_statement)
    return row, stored, added
