"""What every scope operation shares: the database, the limits, the principal, input checks."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from chatmemory._db import Database
from chatmemory._validation import check_text
from chatmemory.content import ContentPart, flatten_content, inline_size
from chatmemory.errors import InvalidInputError
from chatmemory.limits import Limits
from chatmemory.models import NewMessage
from chatmemory.principal import Principal

Id = UUID | str

# For ``Database.run``'s ``rows``, a row counts as one, and one more for each this many
# characters or bytes of what it holds: a large value is a page or more of the database on its own.
_ROW_SIZE = 4096
# What a JSON number, boolean or other value that is not a string counts as in ``json_size``.
_SCALAR_SIZE = 8


def json_size(value: object) -> int:
    """About how many characters ``value`` (a checked JSON value, or ``None``) takes stored:
    its strings and keys, and a few for each of its other values."""
    size = 0
    pending = [value]
    while pending:  # not recursive: a value may be nested as deeply as its checks allow
        item = pending.pop()
        if isinstance(item, str):
            size += len(item)
        elif isinstance(item, dict):
            size += sum(map(len, item))
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
        elif item is not None:
            size += _SCALAR_SIZE
    return size


def size_rows(*values: object) -> int:
    """What ``values`` (JSON values) count as in ``Database.run``'s ``rows`` beyond the row
    that holds them."""
    return sum(map(json_size, values)) // _ROW_SIZE


def _content_size(content: str | Sequence[ContentPart]) -> int:
    """A string's length; for parts, every field's size, inline data counted in decoded bytes."""
    if isinstance(content, str):
        return len(content)
    size = 0
    for part in content:
        size += inline_size(part)
        size += sum(json_size(value) for name, value in part if name != "data")
    return size


def content_rows(content: str | Sequence[ContentPart]) -> int:
    """What one message's ``content`` counts as in ``Database.run``'s ``rows``."""
    return 1 + _content_size(content) // _ROW_SIZE


def rows_of(batch: Sequence[NewMessage]) -> int:
    """What ``batch`` counts as in ``Database.run``'s ``rows``: each message its content, and
    its usage, metadata and native form."""
    rows = 0
    for m in batch:
        size = _content_size(m.content)
        if m.usage is not None or m.metadata is not None or m.native is not None:
            size += json_size(m.usage) + json_size(m.metadata)
            size += 0 if m.native is None else json_size(m.native.data)
        rows += 1 + size // _ROW_SIZE
    return rows


class ScopeBase:
    def __init__(self, db: Database, principal: Principal, limits: Limits) -> None:
        self._db = db
        self._limits = limits
        self.principal = principal

    def same_store(self, other: ScopeBase) -> bool:
        """Whether ``other`` reads and writes the same store as this scope (one ``ChatMemory``),
        whatever principal each acts as."""
        return self._db is other._db

    @property
    def any_loop(self) -> bool:
        """Whether calls may come from any thread and event loop at once: true for a store
        opened with ``ChatMemory.open``, false over a caller's engine, whose connections belong
        to the event loop that uses them."""
        return self._db.any_loop

    @property
    def limits(self) -> Limits:
        """The limits this scope's writes are held to (its store's)."""
        return self._limits

    def _check_content(self, content: str | list[ContentPart], field: str) -> None:
        if len(flatten_content(content)) > self._limits.content:
            raise InvalidInputError(field, f"longer than {self._limits.content} characters")
        for j, part in enumerate(() if isinstance(content, str) else content):
            if inline_size(part) > self._limits.inline_bytes:
                raise InvalidInputError(f"{field}.{j}.data", f"larger than {self._limits.inline_bytes} bytes")

    def _title(self, title: str | None) -> str | None:
        if title is None:
            return None
        if not isinstance(title, str):
            raise InvalidInputError("title", "must be a string")
        if len(title) > self._limits.title:
            raise InvalidInputError("title", f"longer than {self._limits.title} characters")
        return check_text("title", title)

    def _text(self, field: str, value: str | None) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > self._limits.content:
            raise InvalidInputError(field, f"must be a string of at most {self._limits.content} characters")
        return check_text(field, value)

    def _page_size(self, limit: int) -> int:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= self._limits.list_limit:
            raise InvalidInputError("limit", f"must be an integer from 1 to {self._limits.list_limit}")
        return limit
