"""The chat stores side by side with LlamaIndex's own, over one seeded sequence of calls.

Each call goes to this adapter and to the store LlamaIndex ships for the same role
(``SimpleChatStore`` for ``BaseChatStore``, ``SQLAlchemyChatStore`` on in-memory SQLite for
``Memory``'s ``AsyncDBChatStore``); the answers and every key's messages must agree after
each call. The calls are those llama-index-core's own store tests make, mixed:
run-llama/llama_index, llama-index-core/tests/storage/chat_store/test_simple_chat_store.py
and llama-index-core/tests/storage/chat_store/test_sql.py. Where this adapter is documented
to differ, the expectation says so: a position outside the key gives ``None`` (newer
upstream behaviour; ``SimpleChatStore`` 0.14.25 raises ``IndexError``), and ``get_keys``
lists a key set to no messages (as ``SimpleChatStore`` does; the SQL store lists only keys
holding rows), so key listings are compared on the keys holding messages.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.storage.chat_store.base_db import MessageStatus
from llama_index.core.storage.chat_store.sql import SQLAlchemyChatStore
from sqlalchemy.ext.asyncio import create_async_engine

KEYS = ["a", "b", "c"]
CALLS = 120
ROLES = ["user", "assistant", "tool", "system"]
SIMPLE_CALLS = (
    "set_messages add_message insert delete_message delete_last_message delete_messages get_messages get_keys"
)
DB_CALLS = (
    "add_message add_messages set_messages get_messages count_messages"
    " delete_messages delete_oldest_messages archive_oldest_messages"
)


def plain(value: object) -> object:
    """Messages as ``(role, content)`` so answers of both stores compare."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, ChatMessage):
        return (value.role.value, value.content)
    return value


ASYNC = {
    "set_messages": "aset_messages",
    "add_message": "async_add_message",
    "delete_message": "adelete_message",
    "delete_last_message": "adelete_last_message",
    "delete_messages": "adelete_messages",
    "get_messages": "aget_messages",
    "get_keys": "aget_keys",
}


async def outcome(method: Callable[..., Any], args: tuple[Any, ...]) -> object:
    try:
        result = method(*args)
        if isinstance(result, Awaitable):
            result = await result
    except IndexError:
        return None  # see the module docstring
    return plain(result)


def simple_call(rng: random.Random, n: int) -> tuple[str, tuple[Any, ...]]:
    """A call of llama-index-core's ``BaseChatStore`` tests, with its arguments."""
    key = rng.choice(KEYS)

    def message(i: int) -> ChatMessage:
        return ChatMessage(role=rng.choice(ROLES), content=f"m{n}.{i}")

    name = rng.choice(SIMPLE_CALLS.split())
    if name == "set_messages":
        return name, (key, [message(i) for i in range(rng.randint(0, 3))])
    if name == "add_message":
        return name, (key, message(0))
    if name == "insert":
        return "add_message", (key, message(0), rng.randint(-4, 4))
    if name == "delete_message":
        return name, (key, rng.randint(-3, 4))
    return name, () if name == "get_keys" else (key,)


def db_call(rng: random.Random, n: int) -> tuple[str, tuple[Any, ...]]:
    """A call of llama-index-core's ``SQLAlchemyChatStore`` tests, with its arguments."""
    key = rng.choice(KEYS[:2])
    statuses = [None, MessageStatus.ACTIVE, MessageStatus.ARCHIVED]
    status = rng.choice(statuses[1:])
    # SQLAlchemyChatStore fails on an empty batch: give it at least one message.
    batch = [ChatMessage(role=rng.choice(ROLES), content=f"m{n}.{i}") for i in range(rng.randint(1, 3))]
    name = rng.choice(DB_CALLS.split())
    # Memory adds only active messages: an archived add goes after the archived ones here,
    # by its row id among all messages there (see test_db_chat_store.py for archived adds).
    if name == "add_message":
        return name, (key, batch[0], MessageStatus.ACTIVE)
    if name == "add_messages":
        return name, (key, batch, MessageStatus.ACTIVE)
    if name == "set_messages":
        return name, (key, batch, status)
    if name == "get_messages":
        return name, (key, rng.choice(statuses), rng.choice([None, 1, 2]), rng.choice([None, 1, 3]))
    if name in ("count_messages", "delete_messages"):
        return name, (key, rng.choice(statuses))
    return name, (key, rng.randint(0, 3))


async def test_chat_store_answers_as_simple_chat_store(store: ChatMemoryChatStore) -> None:
    theirs = SimpleChatStore()
    rng = random.Random(7)
    for n in range(CALLS):
        name, args = simple_call(rng, n)
        expected = await outcome(getattr(theirs, name), args)
        got = await outcome(getattr(store, ASYNC[name]), args)
        assert got == expected, (n, name, plain(list(args)))
        for key in KEYS:
            assert plain(await store.aget_messages(key)) == plain(theirs.get_messages(key)), (n, name, key)


async def test_db_chat_store_answers_as_sqlalchemy_chat_store(db_store: ChatMemoryDBChatStore) -> None:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    theirs = SQLAlchemyChatStore(table_name="messages", async_engine=engine)
    rng = random.Random(11)
    try:
        for n in range(CALLS):
            name, args = db_call(rng, n)
            expected = await outcome(getattr(theirs, name), args)
            got = await outcome(getattr(db_store, name), args)
            assert got == expected, (n, name, plain(list(args)))
            for key in KEYS[:2]:
                for status in (MessageStatus.ACTIVE, MessageStatus.ARCHIVED):
                    mine = plain(await db_store.get_messages(key, status=status))
                    assert mine == plain(await theirs.get_messages(key, status=status)), (
                        n,
                        name,
                        key,
                        status,
                    )
            holding = [k for k in await db_store.get_keys() if await db_store.count_messages(k, status=None)]
            assert sorted(holding) == sorted(await theirs.get_keys()), (n, name)
    finally:
        await engine.dispose()
