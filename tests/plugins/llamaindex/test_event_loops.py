"""A chat store made inside ``loop.run_until_complete`` or ``asyncio.run`` and used after that loop
went idle or closed, synchronously and from other loops, as synchronous LlamaIndex programs do.
Each program runs in a daemon thread under a bound, so a call that waits forever fails the test."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from chatmemory_llamaindex import ChatMemoryChatStore
from llama_index.core.llms import ChatMessage
from llama_index.core.memory import ChatMemoryBuffer

from chatmemory import ChatMemory, Principal
from chatmemory.loops import BackgroundLoop
from tests.plugins._threads import in_daemon_thread, owner_loop_beside


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def _use_after_its_loop(store: ChatMemoryChatStore) -> list[str]:
    """Every kind of caller a synchronous program has: sync methods, a buffer, other loops."""
    store.add_message("k", user("sync"))
    ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="k").put(user("buffer"))
    asyncio.run(store.async_add_message("k", user("other loop")))
    assert store.get_keys() == ["k"]
    assert [m.content for m in asyncio.run(store.aget_messages("k"))] == ["sync", "buffer", "other loop"]
    return [str(m.content) for m in store.get_messages("k")]


async def _open_store(url: str) -> tuple[ChatMemory, ChatMemoryChatStore]:
    memory = await ChatMemory.open(url)
    return memory, ChatMemoryChatStore(memory.scoped(Principal("carol")))


def _idle_loop_program(url: str) -> list[str]:
    loop = asyncio.new_event_loop()
    memory, store = loop.run_until_complete(_open_store(url))
    try:
        texts = _use_after_its_loop(store)
        stored = loop.run_until_complete(store.aget_messages("k"))  # its loop serves it again
        assert [m.content for m in stored] == texts
        return texts
    finally:
        store.close()
        loop.run_until_complete(memory.close())
        loop.close()


def _parallel_writers_program(url: str) -> tuple[list[str], int]:
    """Threads, each with a loop of its own, writing at once to one new key of a store whose
    loop is idle: the calls run on the writers' loops, and still start one conversation."""
    loop = asyncio.new_event_loop()
    memory, store = loop.run_until_complete(_open_store(url))

    async def write(writer: int) -> None:
        for n in range(3):
            await store.async_add_message("shared", user(f"{writer}.{n}"))

    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda writer: asyncio.run(write(writer)), range(6)))
        texts = sorted(str(m.content) for m in store.get_messages("shared"))
        listed = loop.run_until_complete(memory.scoped(Principal("carol")).list_conversations())
        return texts, len(listed.items)
    finally:
        store.close()
        loop.run_until_complete(memory.close())
        loop.close()


def _worker_thread_program(url: str) -> tuple[list[str], int, int]:
    """A worker thread writing synchronously, as ``SimpleChatEngine.stream_chat`` writes the
    history from a thread of its own, while the thread that made the store goes on using its
    loop with ``run_until_complete``."""
    loop = asyncio.new_event_loop()
    memory, store = loop.run_until_complete(_open_store(url))
    try:
        errors, turns = owner_loop_beside(
            loop, lambda: [store.add_message("k", user(f"w{i}")) for i in range(20)]
        )
        stored = loop.run_until_complete(store.aget_messages("k"))
        return errors, turns, len(stored)
    finally:
        store.close()
        loop.run_until_complete(memory.close())
        loop.close()


def _closed_loop_program(url: str) -> list[str]:
    with BackgroundLoop() as background:
        memory = background.run(ChatMemory.open(url))
        try:

            async def setup() -> ChatMemoryChatStore:
                return ChatMemoryChatStore(memory.scoped(Principal("carol")))

            store = asyncio.run(setup())
            try:
                return _use_after_its_loop(store)
            finally:
                store.close()
        finally:
            background.run(memory.close())


async def test_a_store_made_on_a_loop_that_is_now_idle_never_waits_for_it(db_url: str) -> None:
    assert await in_daemon_thread(_idle_loop_program, db_url) == ["sync", "buffer", "other loop"]


async def test_a_store_made_inside_asyncio_run_works_after_it_returns(db_url: str) -> None:
    assert await in_daemon_thread(_closed_loop_program, db_url) == ["sync", "buffer", "other loop"]


async def test_writers_on_loops_of_their_own_share_one_conversation_while_its_loop_is_idle(
    db_url: str,
) -> None:
    texts, conversations = await in_daemon_thread(_parallel_writers_program, db_url)
    assert texts == sorted(f"{writer}.{n}" for writer in range(6) for n in range(3))
    assert conversations == 1


async def test_a_worker_thread_writing_synchronously_leaves_the_owners_idle_loop_alone(db_url: str) -> None:
    errors, turns, stored = await in_daemon_thread(_worker_thread_program, db_url)
    assert errors == []
    assert turns > 0 and stored == 20


def _sync_call_beside_an_async_one_program(url: str) -> tuple[list[str], list[str]]:
    """A store made in a synchronous program, then used from async code: one task's read holds
    the store's lock while it awaits the database when a synchronous call on that same loop (a
    sync LlamaIndex entry point called from async code) blocks the loop. The read must not be
    waiting on the blocked loop, or the synchronous call waits for it forever."""
    with BackgroundLoop() as background:
        memory = background.run(ChatMemory.open(url))
        store = ChatMemoryChatStore(memory.scoped(Principal("carol")))
        try:
            store.add_message("k", user("hello"))

            read = store._keyed.messages
            holding = threading.Event()

            async def slow_read(key: str) -> list[ChatMessage]:
                holding.set()  # inside the store's lock, which it keeps while it awaits
                await asyncio.sleep(0.2)
                return await read(key)

            async def main() -> tuple[list[str], list[str]]:
                store._keyed.messages = slow_read  # type: ignore[method-assign]
                reading = asyncio.ensure_future(store.aget_messages("k"))
                while not holding.is_set():
                    await asyncio.sleep(0.001)
                store._keyed.messages = read  # type: ignore[method-assign]
                blocking = [str(m.content) for m in store.get_messages("k")]
                return blocking, [str(m.content) for m in await reading]

            return asyncio.run(main())
        finally:
            store.close()
            background.run(memory.close())


async def test_a_sync_call_beside_an_async_one_holding_the_store_finishes(db_url: str) -> None:
    assert await in_daemon_thread(_sync_call_beside_an_async_one_program, db_url) == (["hello"], ["hello"])
