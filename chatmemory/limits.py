"""Size limits applied to every write."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Upper bounds on what one call may write; anything larger is an ``InvalidInputError``."""

    title: int = 200
    """Characters in a conversation title."""
    content: int = 100_000
    """Characters in a message's flattened content."""
    messages_per_call: int = 1_000
    """Messages in one ``append_messages`` call."""
    inline_bytes: int = 1 << 20
    """Decoded bytes of inline ``data`` in one content part."""
    list_limit: int = 1_000
    """Items in one page of a listing."""
