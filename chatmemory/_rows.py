"""Driver rows to public models, in bulk.

Rows arrive as the driver gives them: on SQLite, UUIDs as hex text and timestamps as naive
UTC text; on PostgreSQL, ``UUID`` and aware ``datetime`` objects; JSON columns as text on
both. A row becomes a dict (JSON parsed only when not NULL, SQLite timestamps marked UTC)
and a whole list is validated by one ``TypeAdapter``, which parses the rest in pydantic-core.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import TypeAdapter

from chatmemory.models import ConversationSummary, History, Message

T = TypeVar("T")

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


class _Reader:
    """Turns rows with a fixed column order into one model type."""

    def __init__(self, model: type[T], fields: tuple[str, ...]) -> None:
        self.fields = fields
        self.json = [i for i, f in enumerate(fields) if f in _JSON]
        self.timestamps = [i for i, f in enumerate(fields) if f in _TIMESTAMPS]
        self.adapter: TypeAdapter[list[Any]] = TypeAdapter(list[model])  # type: ignore[valid-type]

    def dicts(self, rows: Sequence[Sequence[Any]], sqlite: bool) -> list[dict[str, Any]]:
        fields, json_at, ts_at = self.fields, self.json, self.timestamps if sqlite else ()
        loads = json.loads
        out = []
        for row in rows:
            values = list(row)
            for i in json_at:
                if values[i] is not None:
                    values[i] = loads(values[i])
            for i in ts_at:
                if values[i] is not None:
                    values[i] += "Z"
            out.append(dict(zip(fields, values, strict=True)))
        return out

    def models(self, rows: Sequence[Sequence[Any]], sqlite: bool) -> list[Any]:
        return self.adapter.validate_python(self.dicts(rows, sqlite))


_MESSAGES = _Reader(Message, MESSAGE_FIELDS)
_HISTORIES = _Reader(History, HISTORY_FIELDS)
_SUMMARIES = _Reader(ConversationSummary, SUMMARY_FIELDS)


def messages(rows: Sequence[Sequence[Any]], sqlite: bool) -> list[Message]:
    return _MESSAGES.models(rows, sqlite)


def histories(rows: Sequence[Sequence[Any]], sqlite: bool) -> list[History]:
    return _HISTORIES.models(rows, sqlite)


def summaries(rows: Sequence[Sequence[Any]], sqlite: bool) -> list[ConversationSummary]:
    return _SUMMARIES.models(rows, sqlite)


def one(reader: Callable[[Sequence[Sequence[Any]], bool], list[T]], row: Sequence[Any], sqlite: bool) -> T:
    return reader([row], sqlite)[0]
