"""Driver rows to public models, in bulk.

Rows arrive as the driver gives them: on SQLite, UUIDs as hex text and timestamps as naive
UTC text; on PostgreSQL, ``UUID`` and aware ``datetime`` objects; JSON columns as text on
both, except through a caller's engine whose driver decodes them itself (SQLAlchemy's asyncpg
dialect registers a JSON codec on its connections; see ``json_text``). Histories and
summaries become dicts (JSON parsed only when not NULL) validated by one ``TypeAdapter`` per
list.

Messages, read by the thousand, are built without validation: these are rows this package
validated before writing them. Each costs one model and its field dict, plus on SQLite its
id parsed (the ids and timestamps rows share are parsed once per distinct value); JSON is
decoded only when not NULL. Every object a message adds is one more for the cyclic garbage
collector to walk, and a full collection walks the whole process, so a message allocates
nothing else that lives, and a long list is built with the collector paused (see
``_plan.collector_paused``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from chatmemory._ids import _UNKNOWN, _set_int, _set_safe, uuid_of_hex
from chatmemory._plan import collector_paused
from chatmemory.content import PARTS
from chatmemory.errors import CorruptDataError
from chatmemory.models import (
    ConversationSummary,
    History,
    Message,
    Native,
    Page,
)
from chatmemory.models import set_dict as _set_dict
from chatmemory.models import set_extra as _set_extra
from chatmemory.models import set_fields_set as _set_fields_set
from chatmemory.models import set_private as _set_private

T = TypeVar("T")


def json_text(value: Any) -> Any:
    """A JSON column's value as text (``None`` stays ``None``), whether the driver handed over
    its text or the value already decoded: decoded values are encoded again, so both read back
    alike."""
    return value if value is None or type(value) is str else json.dumps(value)


MESSAGE_FIELDS = (
    "id",
    "conversation_id",
    "history_id",
    "seq",
    "role",
    "content",
    "parts",
    "model",
    "status",
    "error",
    "usage",
    "metadata",
    "native",
    "key",
    "created_at",
    "updated_at",
)
HISTORY_FIELDS = (
    "id",
    "conversation_id",
    "model",
    "system_prompts",
    "metadata",
    "status",
    "usage",
    "error",
    "finished_at",
    "created_at",
    "updated_at",
)
SUMMARY_FIELDS = (
    "id",
    "owner_id",
    "tenant_id",
    "title",
    "metadata",
    "pinned_at",
    "archived_at",
    "created_at",
    "updated_at",
    "message_count",
    "last_message_preview",
)
_JSON = frozenset({"parts", "usage", "metadata", "native", "system_prompts"})
_TIMESTAMPS = frozenset({"created_at", "updated_at", "pinned_at", "archived_at", "finished_at"})
# Ids that repeat from row to row (every message of a transcript shares its conversation).
_SHARED_IDS = frozenset({"conversation_id", "history_id"})


def row_params(fields: tuple[str, ...], row: Sequence[Any]) -> dict[str, Any]:
    """A row's columns by name, to send back unchanged: JSON columns as text (see ``json_text``),
    which every driver binds to a JSON parameter, where a value its codec decoded may not be."""
    return {
        name: json_text(value) if name in _JSON else value for name, value in zip(fields, row, strict=True)
    }


class _Reader:
    """Turns rows with a fixed column order into one model type."""

    def __init__(self, model: type[T], fields: tuple[str, ...], kind: str) -> None:
        self.kind = kind
        self.fields = fields
        self.json = [i for i, f in enumerate(fields) if f in _JSON]
        self.timestamps = [i for i, f in enumerate(fields) if f in _TIMESTAMPS]
        self.shared_ids = [i for i, f in enumerate(fields) if f in _SHARED_IDS]
        self.adapter: TypeAdapter[list[Any]] = TypeAdapter(list[model])  # type: ignore[valid-type]

    def dicts(self, rows: Sequence[Sequence[Any]], sqlite: bool) -> list[dict[str, Any]]:
        fields, json_at = self.fields, self.json
        ts_at, ids_at = (self.timestamps, self.shared_ids) if sqlite else ((), ())
        loads = json.loads
        # SQLite text parsed once per distinct value: one append's messages share a timestamp.
        seen: dict[str, Any] = {}
        out = []
        for row in rows:
            values = list(row)
            for i in json_at:
                if type(values[i]) is str:
                    values[i] = loads(values[i])
            for i in ts_at:
                text = values[i]
                if text is not None:
                    parsed = seen.get(text)
                    if parsed is None:
                        parsed = seen[text] = utc_of_text(text)
                    values[i] = parsed
            for i in ids_at:
                text = values[i]
                parsed = seen.get(text)
                if parsed is None:
                    parsed = seen[text] = UUID(text)
                values[i] = parsed
            out.append(dict(zip(fields, values, strict=True)))
        return out

    def models(self, rows: Sequence[Sequence[Any]], sqlite: bool) -> list[Any]:
        try:
            return self.adapter.validate_python(self.dicts(rows, sqlite))
        except (ValueError, TypeError) as exc:
            raise unreadable(self.kind, exc, listed=True) from exc


_HISTORIES = _Reader(History, HISTORY_FIELDS, "history")
_SUMMARIES = _Reader(ConversationSummary, SUMMARY_FIELDS, "conversation")


def unreadable(kind: str, exc: Exception, *, listed: bool = False) -> CorruptDataError:
    """The error of a read that met a stored value chatmemory did not write (another program's, a
    hand-made edit): malformed JSON, a time or id that does not parse, a value of another type or
    shape (``listed``: a row of a list of models, whose error names the field after the row's
    place in the list; otherwise a message's parts or native form, named by their model)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = [str(step) for step in first["loc"][1 if listed else 0 :]]
        if not listed:
            where.insert(0, "native" if exc.title == Native.__name__ else "parts")
        reason = f"{'.'.join(where)}: {first['msg']}" if where else first["msg"]
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return CorruptDataError(f"a stored {kind} could not be read ({reason}); it was not written by chatmemory")


_FIELDS_SET = set(MESSAGE_FIELDS)  # every field is given; one set shared, as pydantic never mutates it
_new_object = object.__new__


class _Parsed(dict[Any, Any]):
    """Values parsed once per distinct text: a transcript's rows share ids and timestamps."""

    def __init__(self, parse: Callable[[Any], Any]) -> None:
        super().__init__()
        self.parse = parse

    def __missing__(self, text: Any) -> Any:
        value = self[text] = None if text is None else self.parse(text)
        return value


def utc_of_text(text: str) -> datetime:
    """A timestamp as SQLite stores it (naive UTC text), aware. Parsed with its offset: a tenth
    of the time of parsing it naive and then setting ``tzinfo`` (``replace`` is the slow part)."""
    try:
        return datetime.fromisoformat(text + "+00:00")
    except ValueError:  # text that names its offset already
        return datetime.fromisoformat(text).astimezone(UTC)


def message_of(data: dict[str, Any]) -> Message:
    """A ``Message`` from a dict of every field, already valid (no validation, no copy)."""
    message: Message = _new_object(Message)
    _set_dict(message, data)
    _set_fields_set(message, _FIELDS_SET)
    _set_extra(message, None)
    _set_private(message, None)
    return message


_PAGE_FIELDS_SET = {"items", "next_cursor", "has_more"}


def page(items: list[T], next_cursor: str | None, has_more: bool) -> Page[T]:
    """``Page(items=items, ...)`` of items that are models already, without validating them
    again (a third of the cost of ``Page()`` for a page of 50)."""
    built: Page[T] = _new_object(Page)
    _set_dict(built, {"items": items, "next_cursor": next_cursor, "has_more": has_more})
    _set_fields_set(built, _PAGE_FIELDS_SET)
    _set_extra(built, None)
    _set_private(built, None)
    return built


# Lists shorter than this are built with the collector running (a page, an append's answer).
_PAUSE_FROM = 1000


def messages(
    rows: Sequence[Sequence[Any]], sqlite: bool, conversation_id: UUID | None = None
) -> list[Message]:
    """Messages from rows in ``MESSAGE_FIELDS`` order. Rows of the conversation ``conversation_id``
    may leave its id NULL (``sql.MESSAGE_IN_CONVERSATION``)."""
    try:
        if len(rows) < _PAUSE_FROM:
            return _messages(rows, sqlite, conversation_id)
        with collector_paused():
            return _messages(rows, sqlite, conversation_id)
    except (ValueError, TypeError) as exc:
        raise unreadable("message", exc) from exc


def _messages(rows: Sequence[Sequence[Any]], sqlite: bool, conversation_id: UUID | None) -> list[Message]:
    # SQLite's text is parsed once per distinct id and timestamp. PostgreSQL's UUIDs and
    # datetimes are used as they come: looking them up would hash each, for nothing to parse.
    # ``uuid_of_hex`` and ``message_of`` are written out here: their calls took a tenth of the
    # time of a page's models.
    ids = _Parsed(uuid_of_hex)
    ids[None] = conversation_id
    times = _Parsed(utc_of_text)
    loads = json.loads
    new, set_int, set_safe, unknown = _new_object, _set_int, _set_safe, _UNKNOWN
    set_dict, set_fields_set, set_extra, set_private = _set_dict, _set_fields_set, _set_extra, _set_private
    fields_set = _FIELDS_SET
    out = []
    for (
        id_, cid, hid, seq, role, content, parts, model, status, error, usage, metadata, native, key,
        created_at, updated_at,
    ) in rows:  # fmt: skip
        if sqlite:
            uuid = new(UUID)
            set_int(uuid, int(id_, 16))
            set_safe(uuid, unknown)
            id_, cid, hid = uuid, ids[cid], ids[hid]
            created_at = times[created_at]
            # NULL: the message never changed (``sql.MESSAGE``)
            updated_at = created_at if updated_at is None else times[updated_at]
        else:
            if cid is None:
                cid = conversation_id
            if updated_at is None:
                updated_at = created_at
        message = new(Message)
        set_dict(
            message,
            {
                "id": id_,
                "conversation_id": cid,
                "history_id": hid,
                "seq": seq,
                "role": role,
                "content": content,
                "parts": None if parts is None else PARTS.validate_json(json_text(parts)),
                "model": model,
                "status": status,
                "error": error,
                "usage": loads(usage) if type(usage) is str else usage,
                "metadata": loads(metadata) if type(metadata) is str else metadata,
                "native": None if native is None else Native.model_validate_json(json_text(native)),
                "key": key,
                "created_at": created_at,
                "updated_at": updated_at,
            },
        )
        set_fields_set(message, fields_set)
        set_extra(message, None)
        set_private(message, None)
        out.append(message)
    return out


def histories(rows: Sequence[Sequence[Any]], sqlite: bool) -> list[History]:
    return _HISTORIES.models(rows, sqlite)


def summaries(rows: Sequence[Sequence[Any]], sqlite: bool) -> list[ConversationSummary]:
    return _SUMMARIES.models(rows, sqlite)


def one(reader: Callable[[Sequence[Sequence[Any]], bool], list[T]], row: Sequence[Any], sqlite: bool) -> T:
    return reader([row], sqlite)[0]
