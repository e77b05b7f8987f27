"""Driver rows to public models, in bulk.

Rows arrive as the driver gives them: on SQLite, UUIDs as hex text and timestamps as naive
UTC text; on PostgreSQL, ``UUID`` and aware ``datetime`` objects; JSON columns as text on
both. A row becomes a dict (JSON parsed only when not NULL; on SQLite, timestamps and the
ids rows share parsed once per distinct value) and a whole list is validated by one
``TypeAdapter``, which parses the rest in pydantic-core.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

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
# Ids that repeat from row to row (every message of a transcript shares its conversation).
_SHARED_IDS = frozenset({"conversation_id", "history_id"})


class _Reader:
    """Turns rows with a fixed column order into one model type."""

    def __init__(self, model: type[T], fields: tuple[str, ...]) -> None:
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
                if values[i] is not None:
                    values[i] = loads(values[i])
            for i in ts_at:
                text = values[i]
                if text is not None:
                    parsed = seen.get(text)
                    if parsed is None:
                        parsed = seen[text] = datetime.fromisoformat(text).replace(tzinfo=UTC)
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
