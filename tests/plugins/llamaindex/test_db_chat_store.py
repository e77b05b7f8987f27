"""``ChatMemoryDBChatStore`` as the async store of LlamaIndex's ``Memory``.

Rewritten from llama-index-core's own tests, run against this store instead of
``SQLAlchemyChatStore`` / the in-memory test store: run-llama/llama_index,
llama-index-core/tests/storage/chat_store/test_sql.py (``delete_message`` there takes a
row id; here, as in ``BaseChatStore``, a position),
llama-index-core/tests/memory/test_memory_custom_chat_store.py and
llama-index-core/tests/memory/test_memory_base.py (queue management).
"""

from __future__ import annotations

import asyncio

import pytest
from chatmemory_llamaindex import ChatMemoryDBChatStore
from llama_index.core.llms import ChatMessage
from llama_index.core.memory import Memory
from llama_index.core.storage.chat_store.base_db import MessageStatus

from chatmemory import InvalidInputError


def texts(messages: list[ChatMessage]) -> list[str | None]:
    return [m.content for m in messages]


def batch(*contents: str) -> list[ChatMessage]:
    return [
        ChatMessage(role="user" if i % 2 == 0 else "assistant", content=c) for i, c in enumerate(contents)
    ]


# -- test_sql.py -----------------------------------------------------------------------------


async def test_add_get_messages(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_message("user1", ChatMessage(role="user", content="hello"))
    await db_store.add_message("user1", ChatMessage(role="assistant", content="world"))

    messages = await db_store.get_messages("user1")
    assert [(m.role.value, m.content) for m in messages] == [("user", "hello"), ("assistant", "world")]
    assert await db_store.get_messages("nonexistent") == []


async def test_add_messages_batch_and_count(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("batch_user", batch("hello", "world", "how are you?"))

    assert texts(await db_store.get_messages("batch_user")) == ["hello", "world", "how are you?"]
    assert await db_store.count_messages("batch_user") == 3
    assert await db_store.count_messages("nonexistent") == 0


async def test_set_messages(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_message("replace_user", ChatMessage(role="user", content="initial"))
    await db_store.set_messages("replace_user", batch("replaced1", "replaced2"))

    assert texts(await db_store.get_messages("replace_user")) == ["replaced1", "replaced2"]


async def test_delete_message(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("delete_user", batch("message1", "message2", "message3"))

    deleted = await db_store.delete_message("delete_user", 1)

    assert deleted is not None and deleted.content == "message2"
    assert texts(await db_store.get_messages("delete_user")) == ["message1", "message3"]
    assert await db_store.delete_message("delete_user", 5) is None


async def test_delete_messages(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_message("delete_all_user1", ChatMessage(role="user", content="user1_message"))
    await db_store.add_message("delete_all_user2", ChatMessage(role="user", content="user2_message"))

    await db_store.delete_messages("delete_all_user1")

    assert await db_store.get_messages("delete_all_user1") == []
    assert len(await db_store.get_messages("delete_all_user2")) == 1
    assert await db_store.get_keys() == ["delete_all_user2"]


async def test_delete_oldest_messages(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("oldest_test", batch("oldest", "middle", "newest"))

    deleted = await db_store.delete_oldest_messages("oldest_test", 1)

    assert texts(deleted) == ["oldest"]
    assert texts(await db_store.get_messages("oldest_test")) == ["middle", "newest"]


async def test_archive_oldest_messages(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("archive_test", batch("oldest", "middle", "newest"))

    archived = await db_store.archive_oldest_messages("archive_test", 1)

    assert texts(archived) == ["oldest"]
    assert texts(await db_store.get_messages("archive_test", status=MessageStatus.ACTIVE)) == [
        "middle",
        "newest",
    ]
    assert texts(await db_store.get_messages("archive_test", status=MessageStatus.ARCHIVED)) == ["oldest"]
    assert texts(await db_store.get_messages("archive_test", status=None)) == ["oldest", "middle", "newest"]
    assert await db_store.count_messages("archive_test", status=MessageStatus.ARCHIVED) == 1

    # Archived messages stay at the front; deleting by status removes only their group.
    await db_store.add_message(
        "archive_test", ChatMessage(role="user", content="old news"), MessageStatus.ARCHIVED
    )
    assert texts(await db_store.get_messages("archive_test", status=None)) == [
        "oldest",
        "old news",
        "middle",
        "newest",
    ]
    assert texts(await db_store.delete_oldest_messages("archive_test", 1)) == ["middle"]
    await db_store.delete_messages("archive_test", status=MessageStatus.ARCHIVED)
    assert texts(await db_store.get_messages("archive_test", status=None)) == ["newest"]
    assert await db_store.count_messages("archive_test", status=MessageStatus.ARCHIVED) == 0


async def test_get_messages_with_limit_offset(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("pagination_test", batch(*(f"message{i}" for i in range(1, 6))))

    assert texts(await db_store.get_messages("pagination_test", limit=2)) == ["message1", "message2"]
    assert texts(await db_store.get_messages("pagination_test", offset=2)) == [
        "message3",
        "message4",
        "message5",
    ]
    assert texts(await db_store.get_messages("pagination_test", limit=2, offset=1)) == [
        "message2",
        "message3",
    ]
    with pytest.raises(InvalidInputError):
        await db_store.get_messages("pagination_test", limit=-1)


async def test_get_keys(db_store: ChatMemoryDBChatStore) -> None:
    for i in (1, 2, 3):
        await db_store.add_message(f"keys_user{i}", ChatMessage(role="user", content=f"user{i}_message"))

    assert await db_store.get_keys() == ["keys_user1", "keys_user2", "keys_user3"]


async def test_deleting_an_archived_message_keeps_the_rest_active(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("k", batch("a", "b", "c", "d"))
    await db_store.archive_oldest_messages("k", 2)

    assert (await db_store.delete_message("k", 0)) == ChatMessage(role="user", content="a")

    assert texts(await db_store.get_messages("k", status=MessageStatus.ARCHIVED)) == ["b"]
    assert texts(await db_store.get_messages("k")) == ["c", "d"]


# -- test_memory_custom_chat_store.py and test_memory_base.py --------------------------------


async def test_memory_accepts_the_store(db_store: ChatMemoryDBChatStore) -> None:
    memory = Memory(token_limit=1000, session_id="test_user", sql_store=db_store)

    await memory.aput_messages(batch("Message 1", "Response 1"))

    assert texts(await memory.aget()) == ["Message 1", "Response 1"]
    assert memory.sql_store is db_store
    assert await db_store.count_messages("test_user") == 2


async def test_from_defaults_seeds_the_store(db_store: ChatMemoryDBChatStore) -> None:
    # ``from_defaults(chat_history=...)`` runs the store synchronously, so it is called off
    # the loop that owns the store (a synchronous call on that loop could never finish).
    memory = await asyncio.to_thread(
        Memory.from_defaults,
        session_id="test_user",
        token_limit=1000,
        chat_history=[ChatMessage(role="user", content="Seeded")],
        chat_store=db_store,
    )

    assert memory.sql_store is db_store
    assert texts(await memory.aget()) == ["Seeded"]
    assert texts(await asyncio.to_thread(memory.get_all)) == ["Seeded"]


async def test_a_synchronous_call_on_the_owning_loop_fails_instead_of_hanging(
    db_store: ChatMemoryDBChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_store._home, "start_timeout", 0.2)
    with pytest.raises(RuntimeError) as raised:
        Memory.from_defaults(
            session_id="blocked", token_limit=1000, chat_history=batch("never"), chat_store=db_store
        )
    # LlamaIndex re-raises it as its own "nested async" error; the store's reason is its cause.
    chain, error = [], raised.value
    while isinstance(error, BaseException):
        chain.append(str(error))
        error = error.__context__
    assert any("owns the chatmemory store is blocked" in text for text in chain)
    await asyncio.sleep(0.05)  # let the loop see the abandoned call
    assert await db_store.get_keys() == []


async def test_waterfall_archives_into_the_store(db_store: ChatMemoryDBChatStore) -> None:
    memory = Memory(
        token_limit=1000,
        token_flush_size=700,
        chat_history_token_ratio=0.9,
        session_id="u",
        sql_store=db_store,
    )

    await memory.aput_messages(batch("x " * 500, "y " * 500, "z " * 500))

    messages = await memory.aget()
    assert len(messages) == 1 and "z " in (messages[0].content or "")
    assert await db_store.count_messages("u", status=MessageStatus.ARCHIVED) == 2
    # Archived, not lost: the conversation keeps all three.
    assert await db_store.count_messages("u", status=None) == 3


async def test_sync_put_works_across_event_loops(db_store: ChatMemoryDBChatStore) -> None:
    memory = Memory(token_limit=1000, session_id="loop_user", sql_store=db_store)

    def body() -> None:
        memory.put(ChatMessage(role="user", content="one"))
        memory.put(ChatMessage(role="user", content="two"))
        assert texts(memory.get_all()) == ["one", "two"]

    await asyncio.to_thread(body)


async def test_queue_keeps_a_complete_turn_starting_with_a_user_message(
    db_store: ChatMemoryDBChatStore,
) -> None:
    memory = Memory(
        token_limit=150,
        token_flush_size=80,
        chat_history_token_ratio=0.5,
        session_id="tools",
        sql_store=db_store,
    )
    await memory.aput_messages(
        [
            ChatMessage(role="user", content="a " * 40),
            ChatMessage(role="assistant", content="b " * 20),
            ChatMessage(role="tool", content="c " * 20),
            ChatMessage(role="assistant", content="d " * 20),
        ]
    )

    current = await memory.aget()
    assert current and current[0].role == "user"
    for i, message in enumerate(current):
        if message.role == "tool":
            assert current[i - 1].role in ("assistant", "tool")


async def test_areset_by_status(db_store: ChatMemoryDBChatStore) -> None:
    memory = Memory(token_limit=1000, session_id="reset", sql_store=db_store)
    await memory.aput(ChatMessage(role="user", content="New message"))
    await memory.areset(status=MessageStatus.ACTIVE)
    assert await memory.aget() == []
    await memory.aset(batch("again"))
    await memory.areset()
    assert await db_store.get_keys() == []
