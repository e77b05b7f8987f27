"""Every adapter takes ``metadata`` to add to each history it starts, and checks it when it is
made: metadata no history could store fails there with a typed error, rather than failing (or
being dropped from) every run the adapter would record."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from chatmemory_langchain import ChatMemoryHistory, ChatMemoryMiddleware
from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore
from chatmemory_openai_agents import ChatMemorySession
from chatmemory_pydantic_ai import ChatMemoryCapability

from chatmemory import ChatMemory, InvalidInputError, Principal
from chatmemory.scope import Scope

Make = Callable[[Scope, str, Any], Any]

ADAPTERS: dict[str, Make] = {
    "openai-agents ChatMemorySession": lambda chat, cid, m: ChatMemorySession(chat, cid, metadata=m),
    "pydantic-ai ChatMemoryCapability": lambda chat, cid, m: ChatMemoryCapability(chat, cid, metadata=m),
    "langchain ChatMemoryMiddleware": lambda chat, cid, m: ChatMemoryMiddleware(chat, cid, metadata=m),
    "langchain ChatMemoryHistory": lambda chat, cid, m: ChatMemoryHistory(chat, cid, model="m", metadata=m),
    "llamaindex ChatMemoryChatStore": lambda chat, cid, m: ChatMemoryChatStore(chat=chat, metadata=m),
    "llamaindex ChatMemoryDBChatStore": lambda chat, cid, m: ChatMemoryDBChatStore(chat=chat, metadata=m),
}

UNSTORABLE: dict[str, Any] = {
    "a datetime": {"when": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)},
    "NaN": {"score": float("nan")},
    "a NUL character": {"note": "a\x00b"},
    "a non-string key": {1: "one"},
    "a list": ["not", "an", "object"],
    "a string": "team=a",
}


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[Scope]:
    # What is checked is the value, before any store call: one backend shows it.
    memory = await ChatMemory.open(f"sqlite:///{tmp_path / 'metadata.db'}")
    yield memory.scoped(Principal("alice"))
    await memory.close()


@pytest.mark.parametrize("value", list(UNSTORABLE.values()), ids=list(UNSTORABLE))
@pytest.mark.parametrize("adapter", list(ADAPTERS.values()), ids=list(ADAPTERS))
async def test_metadata_no_history_could_store_is_refused_when_the_adapter_is_made(
    chat: Scope, adapter: Make, value: Any
) -> None:
    conversation = await chat.start_conversation("Kept as it was")
    with pytest.raises(InvalidInputError) as err:
        adapter(chat, str(conversation.id), value)
    assert err.value.field == "metadata"
    detail = await chat.get_conversation(conversation.id)
    assert (detail.histories, len((await chat.list_conversations()).items)) == ([], 1)
