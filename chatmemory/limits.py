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

    def page_size(self, asked: int) -> int:
        """The page size to ask a listing for when serving a client that asked for ``asked``
        items: at most ``list_limit``, the rest left to the page's cursor (what the MCP and HTTP
        servers do, their defaults included, so a store opened with a lower ``list_limit`` still
        serves every page)."""
        return min(asked, self.list_limit)

    def batch_size(self, asked: int) -> int:
        """How many messages to write per append call when ``asked`` would be the adapter's own
        choice: at most ``messages_per_call``, the rest left to further calls."""
        return min(asked, self.messages_per_call)
