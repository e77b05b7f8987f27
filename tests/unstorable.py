"""A value the store refuses in any message, for tests of what a refused write does."""

from __future__ import annotations

from typing import Any

from chatmemory._validation import MAX_JSON_DEPTH

REFUSED = "nested deeper"
"""What the store's error says of it."""


def too_deep() -> dict[str, Any]:
    """A JSON object nested deeper than the store takes: refused in any message, and one that no
    adapter can store another way (a NUL character or NaN, say, is stored with a stand-in)."""
    value: dict[str, Any] = {}
    for _ in range(MAX_JSON_DEPTH + 10):
        value = {"k": value}
    return value
