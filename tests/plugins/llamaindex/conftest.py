"""Chat stores over Alice's scope, on each backend (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore

from chatmemory.scope import Scope

_ASYNC = {
    "set_messages": "aset_messages",
    "get_messages": "aget_messages",
    "add_message": "async_add_message",
    "delete_messages": "adelete_messages",
    "delete_message": "adelete_message",
    "delete_last_message": "adelete_last_message",
    "get_keys": "aget_keys",
}


class StoreCalls:
    """Calls a ``BaseChatStore`` method by its synchronous name, either synchronously (in a
    worker thread, as ``ChatMemoryBuffer.aget`` does) or through its async variant."""

    def __init__(self, store: ChatMemoryChatStore, mode: str) -> None:
        self.store = store
        self.mode = mode

    async def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return await asyncio.to_thread(getattr(self.store, name), *args, **kwargs)
        return await getattr(self.store, _ASYNC[name])(*args, **kwargs)


@pytest.fixture
async def store(alice: Scope) -> AsyncIterator[ChatMemoryChatStore]:
    chat_store = ChatMemoryChatStore(alice)
    yield chat_store
    chat_store.close()


@pytest.fixture(params=["sync", "async"])
def calls(store: ChatMemoryChatStore, request: pytest.FixtureRequest) -> StoreCalls:
    return StoreCalls(store, request.param)


@pytest.fixture
async def db_store(alice: Scope) -> AsyncIterator[ChatMemoryDBChatStore]:
    chat_store = ChatMemoryDBChatStore(alice)
    yield chat_store
    chat_store.close()
