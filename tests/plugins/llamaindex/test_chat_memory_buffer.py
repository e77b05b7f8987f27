"""``ChatMemoryBuffer`` over ``ChatMemoryChatStore``.

Rewritten from llama-index-core's own buffer tests, run against this store instead of the
default ``SimpleChatStore``: run-llama/llama_index,
llama-index-core/tests/memory/test_chat_memory_buffer.py. The buffer calls the store's
synchronous methods, so each test body runs in a worker thread, as ``ChatMemoryBuffer.aget``
itself does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from chatmemory_llamaindex import ChatMemoryChatStore
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.utils import get_tokenizer

tokenizer = get_tokenizer()

USER = ChatMessage(role=MessageRole.USER, content="first message")
USER_TOKENS = len(tokenizer(str(USER.content)))
SECOND_USER = ChatMessage(role=MessageRole.USER, content="second message")
ASSISTANT = ChatMessage(role=MessageRole.ASSISTANT, content="first answer")
ASSISTANT_TOKENS = len(tokenizer(str(ASSISTANT.content)))
SECOND_ASSISTANT = ChatMessage(role=MessageRole.USER, content="second answer")
SECOND_ASSISTANT_TOKENS = len(tokenizer(str(SECOND_ASSISTANT.content)))


async def in_thread(body: Callable[[], None]) -> None:
    await asyncio.to_thread(body)


def buffer(store: ChatMemoryChatStore, history: list[ChatMessage] | None, **kwargs: int) -> ChatMemoryBuffer:
    return ChatMemoryBuffer.from_defaults(
        chat_store=store, chat_store_key="k", chat_history=history, **kwargs
    )


async def test_put_get(store: ChatMemoryChatStore) -> None:
    def body() -> None:
        history = buffer(store, [USER]).get()
        assert len(history) == 1
        assert history[0].content == USER.content

    await in_thread(body)


@pytest.mark.parametrize(
    ("history", "token_limit", "initial"),
    [
        pytest.param([USER], 1000, 5, id="initial-tokens-less-than-limit"),
        pytest.param([USER], 5, 5, id="initial-tokens-same-as-limit"),
        pytest.param([USER, ASSISTANT], 5, 5 - USER_TOKENS, id="room-for-the-user-message-only"),
        pytest.param(
            [USER, ASSISTANT, SECOND_USER, SECOND_ASSISTANT],
            5,
            5 - USER_TOKENS - ASSISTANT_TOKENS,
            id="room-for-second-message-and-answer",
        ),
        pytest.param(
            [USER, ASSISTANT, SECOND_USER, SECOND_ASSISTANT],
            10,
            10 - ASSISTANT_TOKENS - USER_TOKENS - SECOND_ASSISTANT_TOKENS,
            id="room-for-all-but-first-message",
        ),
    ],
)
async def test_token_limited_get_matches_the_simple_store(
    store: ChatMemoryChatStore, history: list[ChatMessage], token_limit: int, initial: int
) -> None:
    """The buffer's trimming gives what it gives over its default ``SimpleChatStore``."""

    def body() -> None:
        got = buffer(store, history, token_limit=token_limit).get(initial_token_count=initial)
        reference = ChatMemoryBuffer.from_defaults(chat_history=history, token_limit=token_limit)
        expected = reference.get(initial_token_count=initial)
        assert got == expected

    await in_thread(body)


async def test_initial_tokens_exceeding_limit_raise(store: ChatMemoryChatStore) -> None:
    def body() -> None:
        with pytest.raises(ValueError, match="Initial token count exceeds token limit"):
            buffer(store, None, token_limit=49).get(initial_token_count=50)

    await in_thread(body)


async def test_set(store: ChatMemoryChatStore) -> None:
    def body() -> None:
        memory = buffer(store, [USER])
        memory.put(USER)
        assert len(memory.get()) == 2
        memory.set([USER])
        assert len(memory.get()) == 1

    await in_thread(body)


async def test_max_tokens(store: ChatMemoryChatStore) -> None:
    def body() -> None:
        memory = buffer(store, [USER], token_limit=5)
        memory.put(USER)
        assert len(memory.get()) == 2
        memory.put(USER)
        memory.put(USER)
        assert len(memory.get()) == 2
        assert len(memory.get_all()) == 4
        memory.put(ChatMessage(role=MessageRole.USER, content="test message2"))
        assert memory.get()[-1].content == "test message2"
        assert len(memory.get()) == 2

    await in_thread(body)


async def test_async_methods_and_reset(store: ChatMemoryChatStore) -> None:
    memory = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="k")
    await memory.aput(USER)
    await memory.aput_messages([ASSISTANT, SECOND_USER])
    assert await memory.aget_all() == [USER, ASSISTANT, SECOND_USER]
    assert await memory.aget() == [USER, ASSISTANT, SECOND_USER]
    await memory.aset([SECOND_USER])
    assert await memory.aget_all() == [SECOND_USER]
    await memory.areset()
    assert await memory.aget_all() == []
    assert await store.aget_keys() == []


async def test_serialised_buffer_names_the_store_without_its_scope(store: ChatMemoryChatStore) -> None:
    data = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="k", token_limit=5).to_dict()
    assert data["chat_store"] == {"model": "unknown", "metadata": {}, "class_name": "ChatMemoryChatStore"}
