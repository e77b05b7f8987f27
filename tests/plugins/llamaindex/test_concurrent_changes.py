"""Positional changes of one key made at once, cancelled, or cut off by the store closing.

LlamaIndex's own stores change a key by position under one lock or in one transaction
(``SimpleChatStore`` is a list, ``SQLAlchemyChatStore`` selects and updates in one
session): each message is deleted, archived or kept by exactly one call. These are
llama-index-core's chat-store tests driven concurrently, rewritten against this adapter:
run-llama/llama_index, llama-index-core/tests/storage/chat_store/test_simple_chat_store.py
(``add_message(idx=)``, ``delete_message``, ``delete_last_message``),
llama-index-core/tests/storage/chat_store/test_sql.py (``delete_oldest_messages``,
``archive_oldest_messages``), and the two concurrent ``aput`` calls of
llama-index-core/tests/memory/test_memory_custom_chat_store.py, which reach the store as
concurrent archive calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import UUID

import pytest
from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base_db import MessageStatus

from chatmemory import ChatMemory, Principal, StorageError
from chatmemory.scope import Scope
from tests.plugins.llamaindex.conftest import StoreCalls
from tests.transactions import committed_before_messages

DEADLINE = 60  # seconds: a call that outlives it hangs


def turn(*contents: str) -> list[ChatMessage]:
    return [
        ChatMessage(role="user" if i % 2 == 0 else "assistant", content=c) for i, c in enumerate(contents)
    ]


def texts(messages: list[ChatMessage] | None) -> list[str | None]:
    return [m.content for m in messages or []]


async def both(*calls: Awaitable[object]) -> list[object]:
    return await asyncio.wait_for(asyncio.gather(*calls), DEADLINE)


# -- BaseChatStore ---------------------------------------------------------------------------


async def test_concurrent_delete_last_message_returns_each_message_once(calls: StoreCalls) -> None:
    await calls("set_messages", "k", turn("a", "b", "c"))

    popped = await both(calls("delete_last_message", "k"), calls("delete_last_message", "k"))

    assert sorted(texts(popped)) == ["b", "c"]  # type: ignore[arg-type]
    assert texts(await calls("get_messages", "k")) == ["a"]


async def test_concurrent_delete_message_at_one_index_deletes_two(calls: StoreCalls) -> None:
    await calls("set_messages", "k", turn("a", "b", "c"))

    deleted = await both(calls("delete_message", "k", 0), calls("delete_message", "k", 0))

    assert sorted(texts(deleted)) == ["a", "b"]  # type: ignore[arg-type]
    assert texts(await calls("get_messages", "k")) == ["c"]


async def test_concurrent_inserts_keep_every_message(calls: StoreCalls) -> None:
    await calls("set_messages", "k", turn("a", "b"))

    await both(
        calls("add_message", "k", ChatMessage(role="user", content="x"), idx=0),
        calls("add_message", "k", ChatMessage(role="user", content="y"), idx=0),
        calls("add_message", "k", ChatMessage(role="user", content="z")),
    )

    stored = texts(await calls("get_messages", "k"))
    assert sorted(stored, key=str) == ["a", "b", "x", "y", "z"]
    assert stored.index("a") + 1 == stored.index("b")
    assert {stored.index("x"), stored.index("y")} == {0, 1}


async def test_stores_of_their_own_popping_one_key_take_one_message_each(alice: Scope) -> None:
    stores = [ChatMemoryChatStore(alice) for _ in range(4)]
    try:
        await stores[0].aset_messages("k", turn("a", "b", "c", "d"))

        popped = await both(*(s.adelete_last_message("k") for s in stores))

        assert sorted(texts(popped)) == ["a", "b", "c", "d"]  # type: ignore[arg-type]
        assert await stores[0].aget_messages("k") == []
    finally:
        for store in stores:
            store.close()


async def test_stores_of_their_own_starting_one_key_share_one_conversation(alice: Scope) -> None:
    """A store per request, or per process, each writing a key nobody wrote before."""
    stores = [ChatMemoryChatStore(alice) for _ in range(4)]
    try:
        await both(
            *(
                s.async_add_message("k", ChatMessage(role="user", content=f"q{i}"))
                for i, s in enumerate(stores)
            )
        )

        assert len((await alice.list_conversations()).items) == 1
        fresh = ChatMemoryChatStore(alice)
        assert sorted(texts(await fresh.aget_messages("k")), key=str) == ["q0", "q1", "q2", "q3"]
        assert await fresh.aget_keys() == ["k"]
        fresh.close()
    finally:
        for store in stores:
            store.close()


async def test_processes_starting_one_key_again_after_a_delete_share_one_conversation(db_url: str) -> None:
    opened = [await ChatMemory.open(db_url) for _ in range(3)]
    stores = [ChatMemoryDBChatStore(m.scoped(Principal("alice"))) for m in opened]
    try:
        for round_ in range(3):
            await both(
                *(
                    s.add_message("k", ChatMessage(role="user", content=f"r{round_}.{i}"))
                    for i, s in enumerate(stores)
                )
            )
            for store in stores:
                assert sorted(texts(await store.get_messages("k")), key=str) == [
                    f"r{round_}.{i}" for i in range(3)
                ]
                assert await store.get_keys() == ["k"]
            await stores[round_].delete_messages("k")
            assert [await s.get_messages("k") for s in stores] == [[], [], []]
            assert [await s.get_keys() for s in stores] == [[], [], []]
    finally:
        for store in stores:
            store.close()
        for memory in opened:
            await memory.close()


async def test_a_run_another_store_closes_before_its_first_message_starts_again(
    memory: ChatMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store's user message opens a run and closes the run left running before it, which
    can be the run another store has just started and not yet written to."""
    mine, theirs = memory.scoped(Principal("alice")), memory.scoped(Principal("alice"))
    earlier = ChatMemoryChatStore(mine)
    await earlier.aset_messages("k", turn("q0", "a0"))
    await earlier.async_add_message("k", ChatMessage(role="user", content="q1"))
    earlier.close()
    started, closed = asyncio.Event(), asyncio.Event()
    append = mine.append_messages

    async def held_first(*args: object, **kwargs: object) -> object:
        if not started.is_set():  # the new run's first messages wait until the other store is done
            started.set()
            await closed.wait()
        return await append(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mine, "append_messages", held_first)
    store, other = ChatMemoryChatStore(mine), ChatMemoryChatStore(theirs)
    try:
        writing = asyncio.ensure_future(store.async_add_message("k", ChatMessage(role="user", content="q2")))
        await asyncio.wait_for(started.wait(), DEADLINE)
        await asyncio.wait_for(other.async_add_message("k", ChatMessage(role="user", content="q3")), DEADLINE)
        closed.set()
        await asyncio.wait_for(writing, DEADLINE)

        assert texts(await other.aget_messages("k")) == ["q0", "a0", "q1", "q3", "q2"]
        (conversation,) = (await mine.list_conversations()).items
        histories = (await mine.get_conversation(conversation.id, messages=True)).histories
        assert all(h.messages for h in histories)  # the run closed before its first message is gone
    finally:
        store.close()
        other.close()


# -- AsyncDBChatStore (Memory) -----------------------------------------------------------------


async def test_concurrent_archive_oldest_archives_distinct_messages(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("k", turn("a", "b", "c"))

    archived = await both(db_store.archive_oldest_messages("k", 1), db_store.archive_oldest_messages("k", 1))

    assert sorted(m.content for batch in archived for m in batch) == ["a", "b"]  # type: ignore[attr-defined]
    assert texts(await db_store.get_messages("k")) == ["c"]
    assert texts(await db_store.get_messages("k", status=MessageStatus.ARCHIVED)) == ["a", "b"]


async def test_concurrent_delete_oldest_deletes_distinct_messages(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("k", turn("a", "b", "c"))

    deleted = await both(db_store.delete_oldest_messages("k", 1), db_store.delete_oldest_messages("k", 1))

    assert sorted(m.content for batch in deleted for m in batch) == ["a", "b"]  # type: ignore[attr-defined]
    assert texts(await db_store.get_messages("k", status=None)) == ["c"]


async def test_archiving_beside_an_archived_add_keeps_both(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("k", turn("a", "b"))

    await both(
        db_store.add_message("k", ChatMessage(role="user", content="old"), status=MessageStatus.ARCHIVED),
        db_store.archive_oldest_messages("k", 1),
    )

    assert texts(await db_store.get_messages("k")) == ["b"]
    assert sorted(texts(await db_store.get_messages("k", status=MessageStatus.ARCHIVED))) == ["a", "old"]


async def test_concurrent_delete_message_keeps_the_archive_watermark(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("k", turn("a", "b", "c", "d"))
    await db_store.archive_oldest_messages("k", 2)

    await both(db_store.delete_message("k", 0), db_store.delete_message("k", 0))

    assert texts(await db_store.get_messages("k", status=MessageStatus.ARCHIVED)) == []
    assert texts(await db_store.get_messages("k")) == ["c", "d"]


async def reads_during(
    change: Awaitable[object], read: Callable[[], Awaitable[list[ChatMessage]]]
) -> list[list[str | None]]:
    """What ``read`` returns, again and again, while ``change`` runs."""
    done = asyncio.ensure_future(change)
    seen = []
    while not done.done():
        seen.append(texts(await read()))
    await done
    return seen


async def test_reads_never_see_half_an_insertion(calls: StoreCalls) -> None:
    await calls("set_messages", "k", turn("a", "b", "c"))
    before = ["a", "b", "c"]
    for n in range(8):
        message = ChatMessage(role="user", content=f"x{n}")
        seen = await reads_during(
            calls("add_message", "k", message, idx=1), lambda: calls("get_messages", "k")
        )
        after = [before[0], f"x{n}", *before[1:]]
        assert all(s in (before, after) for s in seen), seen
        before = after


async def test_reads_never_take_an_archived_add_for_an_active_message(
    db_store: ChatMemoryDBChatStore,
) -> None:
    await db_store.add_messages("k", turn("a", "b"))
    for n in range(8):
        old = ChatMessage(role="user", content=f"old{n}")
        seen = await reads_during(
            db_store.add_message("k", old, status=MessageStatus.ARCHIVED), lambda: db_store.get_messages("k")
        )
        assert all(s == ["a", "b"] for s in seen), seen
    assert len(await db_store.get_messages("k", status=MessageStatus.ARCHIVED)) == 8


# -- cancelled and closed --------------------------------------------------------------------


async def test_a_cancelled_add_leaves_the_key_whole_and_usable(store: ChatMemoryChatStore) -> None:
    """Cancelled after 0, 1, 2, ... turns of the event loop: wherever the cancel lands, the
    message is stored once or not at all, and the next calls neither wait nor fail."""
    expected: list[str | None] = []
    for steps in range(0, 40, 4):
        text = f"cancelled after {steps}"
        task = asyncio.ensure_future(store.async_add_message("k", ChatMessage(role="user", content=text)))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        stored = texts(await asyncio.wait_for(store.aget_messages("k"), DEADLINE))
        assert stored in (expected, [*expected, text])
        expected = stored
        reply = ChatMessage(role="assistant", content=f"reply {steps}")
        await asyncio.wait_for(store.async_add_message("k", reply), DEADLINE)
        expected.append(reply.content)
        popped = await asyncio.wait_for(store.adelete_last_message("k"), DEADLINE)
        assert popped is not None and popped.content == reply.content
        expected.pop()
    assert texts(await store.aget_messages("k")) == expected


async def _add(store: ChatMemoryChatStore | ChatMemoryDBChatStore, text: str) -> None:
    message = ChatMessage(role="user", content=text)
    if isinstance(store, ChatMemoryChatStore):
        await store.async_add_message("k", message)
    else:
        await store.add_message("k", message)


async def _keys(store: ChatMemoryChatStore | ChatMemoryDBChatStore) -> list[str]:
    if isinstance(store, ChatMemoryChatStore):
        return await asyncio.to_thread(store.get_keys)  # the synchronous path, from a worker thread
    return await store.get_keys()


async def new_history(chat: Scope, cid: UUID, before: set[UUID]) -> None:
    """Return once a history not in ``before`` is stored."""
    while not {h.id for h in (await chat.get_conversation(cid)).histories} - before:
        await asyncio.sleep(0)


async def test_a_set_cancelled_once_its_new_content_is_stored_completes(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    """``set_messages`` stores the new content, then deletes the old: cancelled as soon as the
    new content is seen stored, the key must hold the new content only, never both."""
    await store.aset_messages("k", turn("a", "b"))
    (conversation,) = (await alice.list_conversations()).items
    for n in range(3):
        before = {h.id for h in (await alice.get_conversation(conversation.id)).histories}
        new = turn(f"x{n}", f"y{n}")
        task = asyncio.ensure_future(store.aset_messages("k", new))

        await asyncio.wait_for(new_history(alice, conversation.id, before), DEADLINE)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert texts(await asyncio.wait_for(store.aget_messages("k"), DEADLINE)) == texts(new), n


async def test_a_cancelled_archived_add_is_whole_or_absent(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("k", turn("a", "b"))
    archived = 0
    for steps in range(60):
        task = asyncio.ensure_future(
            db_store.add_message(
                "k", ChatMessage(role="user", content=f"old{steps}"), status=MessageStatus.ARCHIVED
            )
        )
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert texts(await asyncio.wait_for(db_store.get_messages("k"), DEADLINE)) == ["a", "b"], steps
        now = len(await db_store.get_messages("k", status=MessageStatus.ARCHIVED))
        assert now in (archived, archived + 1), steps
        archived = now


@pytest.mark.parametrize("kind", [ChatMemoryChatStore, ChatMemoryDBChatStore])
async def test_a_store_closed_under_its_calls_fails_them_clearly(
    db_url: str, kind: type[ChatMemoryChatStore | ChatMemoryDBChatStore]
) -> None:
    memory = await ChatMemory.open(db_url)
    store = kind(memory.scoped(Principal("alice")))
    try:
        await _add(store, "first")
        calls = [asyncio.ensure_future(_add(store, f"q{i}")) for i in range(6)]
        calls.append(asyncio.ensure_future(_keys(store)))
        await asyncio.sleep(0)
        await asyncio.wait_for(memory.close(), DEADLINE)
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), DEADLINE)
        for outcome in outcomes:
            assert not isinstance(outcome, BaseException) or isinstance(outcome, StorageError), outcome
        with pytest.raises(StorageError, match="closed"):
            await asyncio.wait_for(_keys(store), DEADLINE)
        with pytest.raises(StorageError, match="closed"):
            await asyncio.wait_for(_add(store, "late"), DEADLINE)
    finally:
        store.close()
        await memory.close()


async def test_a_read_sees_the_archive_mark_with_the_messages_it_counts(
    db_url: str, memory: ChatMemory, db_store: ChatMemoryDBChatStore
) -> None:
    """Another process deletes a key's archived messages (and so its archive mark) while this
    store reads the key: the mark and the messages come from one snapshot, so the active
    messages are the same before and after, never the newest alone."""
    await db_store.add_messages("k", turn("a", "b", "c"))
    await db_store.archive_oldest_messages("k", 1)
    async with ChatMemory.open(db_url) as elsewhere:

        async def delete_archived() -> None:
            # A store of the other process's own, on the event loop that process runs.
            other = ChatMemoryDBChatStore(elsewhere.scoped(Principal("alice")))
            try:
                await other.delete_messages("k", status=MessageStatus.ARCHIVED)
            finally:
                other.close()

        with committed_before_messages(memory, delete_archived) as done:
            active = await db_store.get_messages("k", status=MessageStatus.ACTIVE)
        assert done  # it committed while the key was read
    assert texts(active) == ["b", "c"]
    assert texts(await db_store.get_messages("k", status=None)) == ["b", "c"]
