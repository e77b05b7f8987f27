"""Reads of keys fit a store opened with a lower cap on a listing page (Limits.list_limit)."""

from __future__ import annotations

from chatmemory_llamaindex import ChatMemoryChatStore
from llama_index.core.llms import ChatMessage

from chatmemory import ChatMemory, Limits, Principal


async def test_keys_on_a_store_with_a_lower_cap_on_a_page(db_url: str) -> None:
    async with ChatMemory.open(db_url, limits=Limits(list_limit=5)) as memory:
        store = ChatMemoryChatStore(memory.scoped(Principal("alice")))
        for i in range(7):
            await store.aset_messages(f"k{i}", [ChatMessage(role="user", content=f"m{i}")])
        assert sorted(await store.aget_keys()) == [f"k{i}" for i in range(7)]
        assert [m.content for m in await store.aget_messages("k3")] == ["m3"]
        store.close()
