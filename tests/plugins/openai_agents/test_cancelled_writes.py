"""A session call cancelled while it writes: it finishes its writes, then is cancelled, whatever
the writes' outcome, and never waits on a store closed meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any

from chatmemory_openai_agents import ChatMemorySession

from chatmemory import ChatMemory, Conversation
from chatmemory.scope import Scope


async def test_a_cancelled_add_ends_cancelled_when_the_store_closes_meanwhile(
    memory: ChatMemory, alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    items: list[Any] = [{"role": "user", "content": f"m{i}"} for i in range(2500)]
    adding = asyncio.create_task(session.add_items(items))
    await asyncio.sleep(0)  # the add has started its writes
    adding.cancel()
    await asyncio.wait_for(memory.close(), timeout=10)

    done, _ = await asyncio.wait({adding}, timeout=10)
    assert done == {adding}  # never left waiting on the closed store
    # The caller's cancellation goes on: the store's refusal does not take its place.
    assert adding.cancelled()


async def test_a_cancelled_pop_ends_cancelled_once_its_write_is_done(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    await session.add_items([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    popping = asyncio.create_task(session.pop_item())
    await asyncio.sleep(0)
    popping.cancel()
    done, _ = await asyncio.wait({popping}, timeout=10)
    assert done == {popping} and popping.cancelled()
    # The pop was seen through: the newest item is gone, the other stays.
    assert await session.get_items() == [{"role": "user", "content": "a"}]
