"""``ChatMemoryChatStore`` as a LlamaIndex ``BaseChatStore``, every method sync and async.

The first tests are llama-index-core's own chat-store tests, rewritten against this store:
run-llama/llama_index, llama-index-core/tests/storage/chat_store/test_simple_chat_store.py
(including the newer out-of-range and empty-key cases, which return ``None``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from chatmemory_llamaindex import ChatMemoryChatStore
from llama_index.core.llms import ChatMessage
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.storage.chat_store import SimpleChatStore

from chatmemory import (
    ChatMemory,
    ImagePart,
    InvalidInputError,
    NewMessage,
    Principal,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.scope import Scope
from tests.plugins.llamaindex.conftest import StoreCalls
from tests.unstorable import too_deep


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


async def test_add_messages(calls: StoreCalls) -> None:
    for key in ("user1", "user2"):
        await calls("add_message", key, user("hello"))
        await calls("add_message", key, user("world"))

    assert await calls("get_messages", "user1") == [user("hello"), user("world")]
    assert await calls("get_messages", "user2") == [user("hello"), user("world")]
    assert await calls("get_keys") == ["user1", "user2"]

    await calls("add_message", "user1", user("hello"), idx=0)
    assert await calls("get_messages", "user1") == [user("hello"), user("hello"), user("world")]
    await calls("add_message", "user1", user("middle"), idx=2)
    assert [m.content for m in await calls("get_messages", "user1")] == ["hello", "hello", "middle", "world"]


async def test_delete_chat_messages(calls: StoreCalls) -> None:
    for key in ("user1", "user2"):
        await calls("add_message", key, user("hello"))
        await calls("add_message", key, user("world"))

    assert await calls("delete_messages", "user1") == [user("hello"), user("world")]

    assert await calls("get_messages", "user1") == []
    assert await calls("get_messages", "user2") == [user("hello"), user("world")]
    assert await calls("get_keys") == ["user2"]
    assert await calls("delete_messages", "user1") is None


async def test_delete_chat_message(calls: StoreCalls) -> None:
    await calls("add_message", "user1", user("hello"))
    await calls("add_message", "user1", user("world"))

    assert await calls("delete_last_message", "user1") == user("world")

    assert await calls("get_messages", "user1") == [user("hello")]


async def test_delete_chat_message_idx(calls: StoreCalls) -> None:
    await calls("add_message", "user1", user("hello"))
    await calls("add_message", "user1", user("world"))

    assert await calls("delete_message", "user1", 0) == user("hello")

    assert await calls("get_messages", "user1") == [user("world")]


async def test_delete_chat_message_out_of_bounds(calls: StoreCalls) -> None:
    await calls("add_message", "user1", user("hello"))

    assert await calls("delete_message", "user1", -2) is None
    assert await calls("delete_message", "user1", 1) is None
    assert await calls("delete_message", "nobody", 0) is None
    assert await calls("get_messages", "user1") == [user("hello")]


async def test_delete_last_chat_message_from_empty_history(calls: StoreCalls) -> None:
    message = user("hello")
    await calls("add_message", "user1", message)

    assert await calls("delete_last_message", "user1") == message
    assert await calls("delete_last_message", "user1") is None
    assert await calls("delete_last_message", "nobody") is None


async def test_set_messages_replaces_and_non_ascii_survives(calls: StoreCalls) -> None:
    await calls("add_message", "user1", user("old"))
    await calls("set_messages", "user1", [user("ハロー héllo"), ChatMessage(role="assistant", content="ok")])

    assert [m.content for m in await calls("get_messages", "user1")] == ["ハロー héllo", "ok"]
    await calls("set_messages", "user1", [])
    assert await calls("get_messages", "user1") == []


# -- what a chatmemory-backed store adds --------------------------------------------------------


async def test_keys_are_the_principals_conversations(
    alice: Scope, bob: Scope, store: ChatMemoryChatStore
) -> None:
    await store.async_add_message("trip", user("hi"))
    bobs = ChatMemoryChatStore(bob)
    assert await bobs.aget_keys() == []
    assert await bobs.aget_messages("trip") == []
    await bobs.async_add_message("trip", user("bob's own"))
    assert [m.content for m in await store.aget_messages("trip")] == ["hi"]

    # A conversation started elsewhere is reachable by its id, and listed by it.
    conversation = await alice.start_conversation(title="from the SDK")
    run = await alice.start_history(conversation.id, model="gpt-x")
    await alice.append_messages(run.id, [NewMessage(role="user", content="sdk")])
    assert await store.aget_keys() == ["trip", str(conversation.id)]
    assert [m.content for m in await store.aget_messages(str(conversation.id))] == ["sdk"]
    # Bob cannot reach it by id.
    assert await bobs.aget_messages(str(conversation.id)) == []


async def test_each_user_message_after_a_reply_opens_a_history(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    for message in (user("q1"), user("q1 again"), ChatMessage(role="assistant", content="a1"), user("q2")):
        await store.async_add_message("k", message)

    (conversation,) = (await alice.list_conversations()).items
    detail = await alice.get_conversation(conversation.id, messages=True)
    runs = [[m.content for m in h.messages or []] for h in detail.histories]
    assert runs == [["q1", "q1 again", "a1"], ["q2"]]
    assert [h.status for h in detail.histories] == ["completed", "running"]
    assert {h.model for h in detail.histories} == {"unknown"}
    assert conversation.metadata == {"llamaindex_key": "k"}


async def test_a_deleted_conversation_is_started_again(alice: Scope, store: ChatMemoryChatStore) -> None:
    await store.async_add_message("k", user("first"))
    (conversation,) = (await alice.list_conversations()).items
    await alice.delete_conversation(conversation.id)  # behind the store's back

    assert await store.aget_messages("k") == []
    await store.async_add_message("k", user("second"))
    assert [m.content for m in await store.aget_messages("k")] == ["second"]


async def test_a_key_deleted_and_set_again_each_turn_costs_the_same_every_turn(
    alice: Scope, store: ChatMemoryChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LlamaIndex's ``ChatSummaryMemoryBuffer`` deletes its key and sets it again on every
    ``get()``: each time the key's next conversation is a new generation (see ``_claim``),
    looked for from the one this store started last, not from the first, so a turn's store
    calls do not grow with the turns before it."""
    calls = _count_calls(alice, monkeypatch)
    per_turn = []
    for turn in range(12):
        before = calls()
        await store.adelete_messages("k")
        await store.aset_messages("k", [user(f"turn {turn}")])
        per_turn.append(calls() - before)

    assert per_turn[2:] == [per_turn[2]] * 10
    assert [m.content for m in await store.aget_messages("k")] == ["turn 11"]
    assert [m.content for m in await ChatMemoryChatStore(alice).aget_messages("k")] == ["turn 11"]


async def test_a_key_deleted_and_set_again_by_a_new_store_object_each_request_costs_the_same_every_time(
    alice: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A web app making a store object per request, each doing what ``ChatSummaryMemoryBuffer``
    does: the key's conversation records its generation, so a new object that reads it knows
    where the next one is looked for, instead of trying every generation deleted before."""
    calls = _count_calls(alice, monkeypatch)
    per_request = []
    for request in range(12):
        before = calls()
        store = ChatMemoryChatStore(alice)
        await store.aget_messages("k")
        await store.adelete_messages("k")
        await store.aset_messages("k", [user(f"request {request}")])
        store.close()
        per_request.append(calls() - before)

    assert per_request[2:] == [per_request[2]] * 10
    (conversation,) = (await alice.list_conversations()).items
    assert conversation.metadata == {"llamaindex_key": "k", "llamaindex_generation": 11}
    assert [m.content for m in await ChatMemoryChatStore(alice).aget_messages("k")] == ["request 11"]


def _count_calls(alice: Scope, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many times the store looked a key's conversation up (by id, by listing) or
    tried to start one, so far."""
    calls = 0
    for name in ("get_tail", "import_conversation", "list_conversations"):
        method = getattr(alice, name)

        async def counted(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return await _method(*args, **kwargs)

        monkeypatch.setattr(alice, name, counted)
    return lambda: calls


async def test_a_key_another_store_started_again_is_read_through_the_store_that_started_it_first(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    """The store that started a key remembers that conversation's generation; once another store
    (or process) deletes the key and writes it again, the first one reads the new conversation,
    not nothing."""
    await store.async_add_message("k", user("q1"))
    other = ChatMemoryChatStore(alice)
    await other.adelete_messages("k")
    await other.async_add_message("k", user("fresh start"))

    assert [m.content for m in await store.aget_messages("k")] == ["fresh start"]
    assert (await store.adelete_last_message("k")) == user("fresh start")
    assert await other.aget_messages("k") == []
    other.close()


async def test_the_framework_marker_of_its_histories_stays_the_adapters_own(alice: Scope) -> None:
    """A run's history is known as this adapter's by ``metadata["framework"]`` (so the next
    run, through any store object, closes it): ``metadata`` given to the store cannot replace it."""
    for turn in range(2):
        store = ChatMemoryChatStore(alice, metadata={"framework": "rag-app", "app": "rag"})
        await store.async_add_message("k", user(f"hi {turn}"))
        await store.async_add_message("k", ChatMessage(role="assistant", content=f"reply {turn}"))
        store.close()

    (conversation,) = (await alice.list_conversations()).items
    histories = (await alice.get_conversation(conversation.id)).histories
    assert [(h.metadata or {}).get("framework") for h in histories] == ["llamaindex", "llamaindex"]
    assert [(h.metadata or {}).get("app") for h in histories] == ["rag", "rag"]
    assert histories[0].status == "completed"


async def test_blocks_round_trip_and_are_stored_as_parts(alice: Scope, store: ChatMemoryChatStore) -> None:
    from llama_index.core.base.llms.types import ImageBlock, TextBlock, ToolCallBlock

    sent = [
        ChatMessage(
            role="user",
            blocks=[
                TextBlock(text="what is this?"),
                ImageBlock(url="https://example.com/cat.png"),
                ImageBlock(image=b"\x89PNG-bytes", image_mimetype="image/png"),
            ],
        ),
        ChatMessage(
            role="assistant", blocks=[ToolCallBlock(tool_call_id="c1", tool_name="look", tool_kwargs={})]
        ),
        ChatMessage(role="tool", content="a cat", additional_kwargs={"tool_call_id": "c1"}),
    ]
    await store.aset_messages("k", sent)

    assert await store.aget_messages("k") == sent
    stored = await alice.transcript((await alice.list_conversations()).items[0].id)
    assert [type(p) for p in stored[0].parts or []] == [TextPart, ImagePart, ImagePart]
    assert stored[0].content == "what is this?"
    assert stored[1].parts == [ToolCallPart(id="c1", name="look", arguments={})]
    assert stored[2].parts == [ToolResultPart(call_id="c1", content="a cat")]
    assert all(m.native is not None and m.native.format == "llamaindex" for m in stored)


async def test_messages_of_other_frameworks_are_read_from_their_parts(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    conversation = await alice.start_conversation()
    run = await alice.start_history(conversation.id, model="gpt-x")
    await alice.append_messages(
        run.id,
        [
            NewMessage(
                role="user", content=[TextPart(text="look"), ImagePart(url="https://example.com/a.png")]
            ),
            NewMessage(role="assistant", content=[ToolCallPart(id="c1", name="look", arguments={"q": 1})]),
            NewMessage(role="tool", content=[ToolResultPart(call_id="c1", content="seen")]),
            NewMessage(role="assistant", content="done"),
        ],
    )

    got = await store.aget_messages(str(conversation.id))
    assert [m.role.value for m in got] == ["user", "assistant", "tool", "assistant"]
    assert got[0].blocks[1].url is not None and str(got[0].blocks[1].url) == "https://example.com/a.png"  # type: ignore[union-attr]
    assert got[1].blocks[0].tool_kwargs == {"q": 1}  # type: ignore[union-attr]
    assert got[2].additional_kwargs == {"tool_call_id": "c1"} and got[2].content == "seen"
    assert got[3].content == "done"


@pytest.mark.parametrize("kind", ["ChatMemoryChatStore", "ChatMemoryDBChatStore"])
async def test_a_nested_argument_changed_in_a_call_another_writer_stored_reaches_no_later_read(
    kind: str, alice: Scope
) -> None:
    """A tool call recorded by another writer (through the core API) is read from its parts:
    its nested arguments, changed in place by the caller, reach no later read."""
    from chatmemory_llamaindex import ChatMemoryDBChatStore
    from llama_index.core.base.llms.types import ToolCallBlock

    conversation = await alice.start_conversation()
    run = await alice.start_history(conversation.id, model="gpt-x")
    call = ToolCallPart(id="c1", name="search", arguments={"q": {"terms": ["rome"]}})
    await alice.append_messages(run.id, [NewMessage(role="assistant", content=[call])])
    store: Any = ChatMemoryChatStore(alice) if kind == "ChatMemoryChatStore" else ChatMemoryDBChatStore(alice)
    read_key = store.aget_messages if kind == "ChatMemoryChatStore" else store.get_messages

    (read,) = await read_key(str(conversation.id))
    block = read.blocks[0]
    assert isinstance(block, ToolCallBlock) and isinstance(block.tool_kwargs, dict)
    block.tool_kwargs["q"]["terms"].append("paris")
    (again,) = await read_key(str(conversation.id))
    assert again.blocks[0].tool_kwargs == {"q": {"terms": ["rome"]}}
    store.close()


async def test_a_synchronous_call_on_the_owning_loop_is_refused(store: ChatMemoryChatStore) -> None:
    with pytest.raises(RuntimeError, match="would block it; LlamaIndex's synchronous methods"):
        store.add_message("k", user("from the loop itself"))
    assert await store.aget_keys() == []


def test_a_synchronous_program_hands_its_loop_to_the_store(db_url: str) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        memory = asyncio.run_coroutine_threadsafe(_open(db_url), loop).result(timeout=60)
        store = ChatMemoryChatStore(memory.scoped(Principal("alice")), loop=loop)
        buffer = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="k")
        buffer.put(user("sync hello"))
        assert buffer.get_all() == [user("sync hello")]
        assert store.get_keys() == ["k"]
        store.close()  # the loop is the program's: it keeps running
        assert loop.is_running()
        asyncio.run_coroutine_threadsafe(memory.close(), loop).result(timeout=60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def _open(url: str) -> ChatMemory:
    return await ChatMemory.open(url)


async def test_concurrent_writes_to_a_new_key_share_one_conversation_and_run(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    await asyncio.gather(*(store.async_add_message("k", user(f"q{i}")) for i in range(4)))

    (conversation,) = (await alice.list_conversations()).items
    detail = await alice.get_conversation(conversation.id, messages=True)
    assert len(detail.histories) == 1
    assert sorted(m.content for m in detail.histories[0].messages or []) == ["q0", "q1", "q2", "q3"]


async def test_a_refused_message_changes_nothing(alice: Scope, store: ChatMemoryChatStore) -> None:
    await store.async_add_message("k", user("q1"))
    await store.async_add_message("k", ChatMessage(role="assistant", content="a1"))
    (conversation,) = (await alice.list_conversations()).items
    before = await alice.get_conversation(conversation.id, messages=True)
    refused = {"trace": too_deep()}

    with pytest.raises(InvalidInputError):
        await store.async_add_message("k", ChatMessage(role="user", content="q2", additional_kwargs=refused))
    with pytest.raises(InvalidInputError):
        await store.async_add_message(
            "k", ChatMessage(role="assistant", content="a2", additional_kwargs=refused)
        )
    refused_user = ChatMessage(role="user", content="q2", additional_kwargs=refused)
    with pytest.raises(InvalidInputError):
        await store.aset_messages("k", [user("fine"), refused_user])
    with pytest.raises(InvalidInputError):
        await store.async_add_message("", user("no key"))

    after = await alice.get_conversation(conversation.id, messages=True)
    assert after.histories == before.histories
    assert [m.content for m in await store.aget_messages("k")] == ["q1", "a1"]
    assert await store.aget_keys() == ["k"]


async def test_text_neither_backend_can_hold_is_stored_with_replacements(store: ChatMemoryChatStore) -> None:
    # SimpleChatStore keeps it; no database column of text holds a NUL character or a lone
    # surrogate, so U+FFFD stands in for each rather than the write failing.
    await store.async_add_message("k", ChatMessage(role="tool", content="PK\x03\x04\x00\x00 caf\udce9.txt"))
    (read,) = await store.aget_messages("k")
    assert read.content == "PK\x03\x04\ufffd\ufffd caf\ufffd.txt"


async def test_another_frameworks_run_in_progress_is_left_alone(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    conversation = await alice.start_conversation()
    theirs = await alice.start_history(conversation.id, model="gpt-x", metadata={"framework": "other"})
    await alice.append_messages(theirs.id, [NewMessage(role="user", content="theirs")])

    await store.async_add_message(str(conversation.id), ChatMessage(role="assistant", content="ours"))

    detail = await alice.get_conversation(conversation.id, messages=True)
    assert [(h.status, [m.content for m in h.messages or []]) for h in detail.histories] == [
        ("running", ["theirs"]),
        ("running", ["ours"]),
    ]


@pytest.mark.parametrize("then_set", [False, True])
async def test_a_key_deleted_while_a_write_closes_its_previous_run_keeps_that_write_once(
    memory: ChatMemory, then_set: bool
) -> None:
    """Another request reads, deletes (and sets again, as ``ChatSummaryMemoryBuffer.get``
    does) the key right after this store's write committed, while it closes its previous
    run: the write is not made again in the key's next conversation. ``SimpleChatStore`` gives
    the same content for the same order of effects."""
    mine, theirs = memory.scoped(Principal("alice")), memory.scoped(Principal("alice"))
    store, other = ChatMemoryChatStore(mine), ChatMemoryChatStore(theirs)
    reference = SimpleChatStore()
    for message in (user("a0"), ChatMessage(role="assistant", content="r0")):
        await store.async_add_message("k", message)
        reference.add_message("k", message)
    for message in (user("b0"), ChatMessage(role="assistant", content="rb0")):  # closes store's run
        await other.async_add_message("k", message)
        reference.add_message("k", message)

    finish = mine.finish_history
    meanwhile: list[ChatMessage] = []

    async def finish_then_the_other_request(*args: Any, **kwargs: Any) -> Any:
        if not meanwhile:
            meanwhile.extend(await other.aget_messages("k"))
            await other.adelete_messages("k")
            if then_set:
                await other.aset_messages("k", meanwhile)
        return await finish(*args, **kwargs)

    mine.finish_history = finish_then_the_other_request  # type: ignore[method-assign]
    await store.async_add_message("k", user("a1"))
    mine.finish_history = finish  # type: ignore[method-assign]
    reference.add_message("k", user("a1"))
    read = reference.get_messages("k")
    reference.delete_messages("k")
    if then_set:
        reference.set_messages("k", read)

    fresh = ChatMemoryChatStore(memory.scoped(Principal("alice")))
    assert [m.content for m in await fresh.aget_messages("k")] == [
        m.content for m in reference.get_messages("k")
    ]
    for each in (store, other, fresh):
        each.close()


async def test_two_store_objects_writing_exchanges_in_turn_keep_each_exchange_whole(alice: Scope) -> None:
    """Two store objects of one process writing outside any workflow run (chat engines),
    their exchanges interleaved: neither closes the other's open exchange, whose end only its
    own object knows. (Before: every exchange after the first was split.)"""
    first, second = ChatMemoryChatStore(alice, model="A"), ChatMemoryChatStore(alice, model="B")
    for turn in range(1, 4):
        for store, role, name in (
            (first, "user", "qA"),
            (second, "user", "qB"),
            (first, "assistant", "rA"),
            (second, "assistant", "rB"),
        ):
            await store.async_add_message("k", ChatMessage(role=role, content=f"{name}{turn}"))

    (conversation,) = (await alice.list_conversations()).items
    detail = await alice.get_conversation(conversation.id, messages=True)
    exchanges = [[m.content for m in h.messages or []] for h in detail.histories]
    for turn in (2, 3):  # the first exchanges meet before either object knows the other wrote
        assert [f"qA{turn}", f"rA{turn}"] in exchanges and [f"qB{turn}", f"rB{turn}"] in exchanges
    first.close()
    second.close()


async def test_a_set_with_another_store_writing_meanwhile_is_whole(memory: ChatMemory) -> None:
    """Another store object of this process adds a message while this one's ``set_messages``
    has stored the new content and not yet deleted the old: the set still ends whole, as
    ``SimpleChatStore``'s does. (Before: the other object closed the set's new
    history, and the set raised with old and new content both stored.)"""
    mine, theirs = memory.scoped(Principal("alice")), memory.scoped(Principal("alice"))
    store, other = ChatMemoryChatStore(mine, model="A"), ChatMemoryChatStore(theirs, model="B")
    reference = SimpleChatStore()
    for writer, message in (
        (other, user("b0")),
        (other, ChatMessage(role="assistant", content="rb0")),
        (store, user("a0")),
        (store, ChatMessage(role="assistant", content="ra0")),
        (other, user("b1")),
        (other, ChatMessage(role="assistant", content="rb1")),
    ):
        await writer.async_add_message("k", message)
        reference.add_message("k", message)
    finish = mine.finish_history

    async def finish_after_the_other_writes(*args: Any, **kwargs: Any) -> Any:
        mine.finish_history = finish  # type: ignore[method-assign]
        await other.async_add_message("k", user("b2"))
        return await finish(*args, **kwargs)

    mine.finish_history = finish_after_the_other_writes  # type: ignore[method-assign]
    new = [user("new0"), ChatMessage(role="assistant", content="new1")]
    await store.aset_messages("k", new)
    reference.set_messages("k", new)
    reference.add_message("k", user("b2"))

    fresh = ChatMemoryChatStore(memory.scoped(Principal("alice")))
    expected = [m.content for m in reference.get_messages("k")]
    assert [m.content for m in await fresh.aget_messages("k")] == expected
    for each in (store, other, fresh):
        each.close()


async def test_messages_read_are_handed_out_again_while_unchanged_and_made_anew_once_changed(
    store: ChatMemoryChatStore,
) -> None:
    """A key's messages are built once, not on every read (``SimpleChatStore`` hands out its own
    list): one left unchanged is handed out again; one changed in place, at any depth, is made
    anew from what was stored, so no change of a caller's reaches a later read."""
    from llama_index.core.base.llms.types import TextBlock

    sent = [user("first"), ChatMessage(role="assistant", blocks=[TextBlock(text="second")]), user("third")]
    await store.aset_messages("k", sent)
    first = await store.aget_messages("k")
    second = await store.aget_messages("k")
    assert second == sent and second is not first
    assert all(a is b for a, b in zip(first, second, strict=True))

    block = second[1].blocks[0]
    assert isinstance(block, TextBlock)
    block.text = "changed"
    second[2].additional_kwargs["note"] = "changed"
    third = await store.aget_messages("k")
    assert third == sent
    assert [m is s for m, s in zip(third, second, strict=True)] == [True, False, False]

    await store.async_add_message("k", user("fourth"))
    fourth = await store.aget_messages("k")
    assert fourth == [*sent, user("fourth")]
    assert all(a is b for a, b in zip(fourth, third, strict=False))
    await store.adelete_messages("k")
    await store.aset_messages("k", sent)
    assert not any(a is b for a, b in zip(await store.aget_messages("k"), fourth, strict=False))


async def test_a_nested_value_changed_in_a_message_read_reaches_no_later_read_nor_the_store(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    """Values nested in a message read (a tool call in ``additional_kwargs``, a tool's object
    argument) are the caller's: changed in place, they reach neither a later read, nor the
    conversation read under another key, nor what an insertion (which writes the key's
    messages again) stores."""
    from llama_index.core.base.llms.types import ToolCallBlock

    call = {"id": "c1", "function": {"name": "f", "arguments": "{}"}}
    block = ToolCallBlock(tool_call_id="c1", tool_name="f", tool_kwargs={"opts": {"n": 1}})
    answer = ChatMessage(role="assistant", blocks=[block], additional_kwargs={"tool_calls": [call]})
    sent = [user("go"), answer]
    await store.aset_messages("k", sent)
    read = await store.aget_messages("k")
    read[1].additional_kwargs["tool_calls"][0]["function"]["name"] = "changed"
    changed = read[1].blocks[0]
    assert isinstance(changed, ToolCallBlock) and isinstance(changed.tool_kwargs, dict)
    changed.tool_kwargs["opts"]["n"] = 999

    assert await store.aget_messages("k") == sent
    (conversation,) = (await alice.list_conversations()).items
    assert await store.aget_messages(str(conversation.id)) == sent
    await store.async_add_message("k", user("first of all"), idx=0)
    assert await ChatMemoryChatStore(alice).aget_messages("k") == [user("first of all"), *sent]


async def test_a_long_lived_store_keeps_nothing_of_the_conversations_it_dropped(alice: Scope) -> None:
    """A key deleted and set again every turn is a new conversation each turn: what the store
    object keeps per conversation goes with the conversation it dropped."""
    store = ChatMemoryChatStore(alice)
    for turn in range(20):
        await store.adelete_messages("k")
        await store.aset_messages("k", [user(f"turn {turn}")])
        await store.async_add_message("k", user(f"more {turn}"))
    kept = store._keyed
    assert (len(kept._ids), len(kept._runs), len(kept._last_seq), len(kept._elsewhere)) == (1, 1, 1, 0)
    store.close()
