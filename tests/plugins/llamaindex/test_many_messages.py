"""More messages in one store call than the store takes in one append: LlamaIndex's own stores
(``SimpleChatStore``, ``SQLAlchemyChatStore``) take any number, and so do these."""

from __future__ import annotations

from typing import Any

import pytest
from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.storage.chat_store.base_db import MessageStatus

from chatmemory import InvalidInputError
from chatmemory.scope import Scope
from tests.plugins.llamaindex.conftest import StoreCalls

MANY = 1_500  # over the store's default of 1,000 messages per append call


def turn(count: int, start: int = 0) -> list[ChatMessage]:
    """One run of ``count`` messages: a user message, then the agent's."""
    return [
        ChatMessage(role="user" if i == start else "assistant", content=f"m{i}")
        for i in range(start, start + count)
    ]


def texts(messages: list[ChatMessage]) -> list[str | None]:
    return [m.content for m in messages]


async def test_set_messages_takes_more_than_one_append_holds(calls: StoreCalls) -> None:
    messages = turn(MANY)
    simple = SimpleChatStore()
    simple.set_messages("k", messages)

    await calls("set_messages", "k", messages)

    assert texts(await calls("get_messages", "k")) == texts(simple.get_messages("k"))
    assert len(await calls("get_messages", "k")) == MANY


async def test_a_long_key_takes_an_insertion(calls: StoreCalls, alice: Scope) -> None:
    await calls("set_messages", "k", turn(MANY))

    await calls("add_message", "k", ChatMessage(role="user", content="first"), 0)

    stored = await calls("get_messages", "k")
    assert texts(stored[:2]) == ["first", "m0"]
    assert len(stored) == MANY + 1
    # Recorded as one finished history, as any insertion is.
    (conversation,) = (await alice.list_conversations()).items
    (history,) = (await alice.get_conversation(conversation.id)).histories
    assert history.status == "completed"


async def test_add_messages_takes_more_than_one_append_holds(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("k", turn(MANY))

    assert texts(await db_store.get_messages("k")) == [f"m{i}" for i in range(MANY)]


async def test_add_messages_to_a_running_run_takes_more_than_one_append_holds(
    db_store: ChatMemoryDBChatStore, alice: Scope
) -> None:
    await db_store.add_messages("k", turn(2))
    await db_store.add_messages("k", [ChatMessage(role="assistant", content=f"m{i}") for i in range(2, MANY)])

    assert texts(await db_store.get_messages("k")) == [f"m{i}" for i in range(MANY)]
    (conversation,) = (await alice.list_conversations()).items
    (history,) = (await alice.get_conversation(conversation.id)).histories
    assert history.status == "running"


async def test_set_and_archive_more_than_one_append_holds(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.set_messages("k", turn(MANY))
    await db_store.add_messages("k", turn(2, MANY), status=MessageStatus.ARCHIVED)

    archived = await db_store.get_messages("k", status=MessageStatus.ARCHIVED)
    assert texts(archived) == [f"m{MANY}", f"m{MANY + 1}"]
    assert await db_store.count_messages("k") == MANY


async def test_a_long_set_refused_part_way_leaves_the_key_as_it_was(
    store: ChatMemoryChatStore, alice: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.aset_messages("k", turn(2))
    append = alice.append_messages
    appends = 0

    async def refusing_the_second(history_id: Any, messages: Any) -> Any:
        nonlocal appends
        appends += 1
        if appends == 2:
            raise InvalidInputError("messages.0.content", "refused")
        return await append(history_id, messages)

    monkeypatch.setattr(alice, "append_messages", refusing_the_second)
    with pytest.raises(InvalidInputError, match="refused"):
        await store.aset_messages("k", turn(MANY))

    assert appends == 2
    assert texts(await store.aget_messages("k")) == ["m0", "m1"]
    (conversation,) = (await alice.list_conversations()).items
    assert len((await alice.get_conversation(conversation.id)).histories) == 1
