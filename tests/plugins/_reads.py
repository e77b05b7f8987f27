"""Counting what an adapter reads from the store, on the real scope."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from chatmemory import Page
from chatmemory.scope import Scope


def count_reads(chat: Scope, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts, on the real scope, the full reads and the messages paged in from the newest end."""
    reads: Counter[str] = Counter()
    get_conversation, list_messages = chat.get_conversation, chat.list_messages

    async def counting_get_conversation(*args: Any, **kwargs: Any) -> Any:
        reads["full"] += bool(kwargs.get("messages"))
        return await get_conversation(*args, **kwargs)

    async def counting_list_messages(*args: Any, **kwargs: Any) -> Page[Any]:
        page = await list_messages(*args, **kwargs)
        reads["paged"] += len(page.items)
        return page

    monkeypatch.setattr(chat, "get_conversation", counting_get_conversation)
    monkeypatch.setattr(chat, "list_messages", counting_list_messages)
    return reads
