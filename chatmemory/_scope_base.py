"""What every scope operation shares: the database, the limits, the principal, input checks."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from chatmemory._db import Database
from chatmemory._validation import check_text
from chatmemory.content import ContentPart, flatten_content
from chatmemory.errors import InvalidInputError
from chatmemory.limits import Limits
from chatmemory.models import NewMessage
from chatmemory.principal import Principal

Id = UUID | str

# For ``Database.run``'s ``rows``, a message counts as one row, and one more for each this many
# characters or bytes of its content: a large one is a page or more of the database on its own.
_ROW_SIZE = 4096


def content_rows(text: str, content: str | Sequence[ContentPart]) -> int:
    """What one message's content (``text``, its flattened form) counts as in
    ``Database.run``'s ``rows``."""
    size = len(text)
    if not isinstance(content, str):
        size += sum(getattr(part, "data_size", 0) for part in content)
    return 1 + size // _ROW_SIZE


def rows_of(batch: Sequence[NewMessage]) -> int:
    """What ``batch`` counts as in ``Database.run``'s ``rows``."""
    return sum(content_rows(m.text, m.content) for m in batch)


class ScopeBase:
    def __init__(self, db: Database, principal: Principal, limits: Limits) -> None:
        self._db = db
        self._limits = limits
        self.principal = principal

    def _check_content(self, content: str | list[ContentPart], field: str) -> None:
        if len(flatten_content(content)) > self._limits.content:
            raise InvalidInputError(field, f"longer than {self._limits.content} characters")
        for j, part in enumerate(() if isinstance(content, str) else content):
            if getattr(part, "data_size", 0) > self._limits.inline_bytes:
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
