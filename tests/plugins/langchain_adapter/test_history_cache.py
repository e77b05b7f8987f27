"""ChatMemoryHistory reuses the messages it read only while they are current: any other writer's change shows.

The other writer is another process, or a second ``ChatMemory`` on the same database (its
own connections, as another process has), changing the conversation between two reads of a history object that
has already read it. The truth is what a new history object, which has read nothing, returns.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator

import pytest
from chatmemory_langchain import ChatMemoryHistory
from chatmemory_langchain._convert import copy_of
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage

from chatmemory import ChatMemory, InvalidInputError, NewMessage, Principal
from chatmemory.scope import Scope
from tests.unstorable import too_deep


@pytest.fixture
async def elsewhere(db_url: str) -> AsyncIterator[Scope]:
    """alice's scope through a second store on the same database: another writer."""
    async with ChatMemory.open(db_url) as other:
        yield other.scoped(Principal("alice"))


# Deletes the newest message, then adds two through a history object of its own, in another process.
DELETE_AND_ADD = textwrap.dedent(
    """
    import asyncio, sys
    from langchain_core.messages import AIMessage, HumanMessage
    from chatmemory import ChatMemory, Principal
    from chatmemory_langchain import ChatMemoryHistory

    async def main(url, conversation_id):
        async with ChatMemory.open(url) as memory:
            chat = memory.scoped(Principal("alice"))
            newest = (await chat.transcript(conversation_id))[-1]
            await chat.delete_message(newest.id)
            history = ChatMemoryHistory(chat, conversation_id, model="fake-c")
            await history.aadd_messages([HumanMessage("elsewhere"), AIMessage("indeed")])

    asyncio.run(main(*sys.argv[1:3]))
    """
)


async def _warm(alice: Scope, turns: int = 3) -> ChatMemoryHistory:
    """A history object that has recorded and read ``turns`` turns."""
    conversation = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conversation.id, model="fake-a")
    for i in range(turns):
        await history.aget_messages()
        await history.aadd_messages([HumanMessage(f"u{i}"), AIMessage(f"a{i}")])
    assert len(await history.aget_messages()) == 2 * turns
    return history


def _other(elsewhere: Scope, history: ChatMemoryHistory) -> ChatMemoryHistory:
    return ChatMemoryHistory(elsewhere, history.conversation_id, model="fake-b")


def _texts(messages: list[BaseMessage]) -> list[str]:
    return [m.text for m in messages]


async def test_messages_another_writer_adds_are_read(alice: Scope, elsewhere: Scope) -> None:
    history = await _warm(alice)
    await _other(elsewhere, history).aadd_messages([HumanMessage("from elsewhere")])
    read = await history.aget_messages()
    assert _texts(read)[-1] == "from elsewhere"
    assert read == await _other(elsewhere, history).aget_messages()


async def test_a_deletion_and_an_add_by_another_process_are_read(
    db_url: str, alice: Scope, elsewhere: Scope
) -> None:
    history = await _warm(alice)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DELETE_AND_ADD, db_url, str(history.conversation_id), env=dict(os.environ)
    )
    assert await asyncio.wait_for(process.wait(), timeout=120) == 0
    read = await history.aget_messages()
    assert _texts(read) == ["u0", "a0", "u1", "a1", "u2", "elsewhere", "indeed"]
    assert read == await _other(elsewhere, history).aget_messages()


async def test_many_messages_another_writer_adds_are_all_read(alice: Scope, elsewhere: Scope) -> None:
    history = await _warm(alice)
    await _other(elsewhere, history).aadd_messages([HumanMessage(f"x{i}") for i in range(40)])
    read = await history.aget_messages()
    assert _texts(read)[-40:] == [f"x{i}" for i in range(40)]
    assert read == await _other(elsewhere, history).aget_messages()


async def test_an_older_message_deleted_while_another_is_added_is_gone(
    alice: Scope, elsewhere: Scope
) -> None:
    # One deleted, one added: the newest messages and the last seq alone would not show it.
    history = await _warm(alice)
    second = (await elsewhere.transcript(history.conversation_id))[1]
    await elsewhere.delete_message(second.id)
    await _other(elsewhere, history).aadd_messages([HumanMessage("new")])
    read = await history.aget_messages()
    assert _texts(read) == ["u0", "u1", "a1", "u2", "a2", "new"]
    assert read == await _other(elsewhere, history).aget_messages()


async def test_the_newest_message_deleted_elsewhere_is_gone(alice: Scope, elsewhere: Scope) -> None:
    history = await _warm(alice)
    newest = (await elsewhere.transcript(history.conversation_id))[-1]
    await elsewhere.delete_message(newest.id)
    assert _texts(await history.aget_messages()) == ["u0", "a0", "u1", "a1", "u2"]


async def test_a_conversation_cleared_and_refilled_elsewhere_is_read_anew(
    alice: Scope, elsewhere: Scope
) -> None:
    history = await _warm(alice)
    other = _other(elsewhere, history)
    await other.aclear()
    await other.aadd_messages([HumanMessage(f"n{i}") for i in range(6)])
    assert _texts(await history.aget_messages()) == [f"n{i}" for i in range(6)]


async def test_a_pending_message_completed_elsewhere_is_read(alice: Scope, elsewhere: Scope) -> None:
    history = await _warm(alice)
    run = await alice.start_history(history.conversation_id, model="m")
    [pending] = await alice.append_messages(run.id, [NewMessage("assistant", "", status="pending")])
    assert _texts(await history.aget_messages())[-1] == ""
    await elsewhere.complete_message(pending.id, content="done")
    read = await history.aget_messages()
    assert _texts(read)[-1] == "done"
    assert read == await _other(elsewhere, history).aget_messages()


async def test_a_pending_message_completed_behind_newer_ones_is_read(alice: Scope, elsewhere: Scope) -> None:
    history = await _warm(alice)
    run = await alice.start_history(history.conversation_id, model="m")
    [pending] = await alice.append_messages(run.id, [NewMessage("assistant", "", status="pending")])
    noted = await alice.start_history(history.conversation_id, model="m")
    await alice.append_messages(noted.id, [NewMessage("user", "a note")])
    assert _texts(await history.aget_messages())[-2:] == ["", "a note"]
    await elsewhere.complete_message(pending.id, content="done")
    read = await history.aget_messages()
    assert _texts(read)[-2:] == ["done", "a note"]
    assert read == await _other(elsewhere, history).aget_messages()


async def test_changing_the_messages_read_changes_nothing_stored_or_cached(alice: Scope) -> None:
    history = await _warm(alice)
    first = await history.aget_messages()
    first[0].content = "changed"
    first[1].response_metadata["model_name"] = "changed"
    first.clear()
    again = await history.aget_messages()
    assert _texts(again)[:2] == ["u0", "a0"]
    assert again[1].response_metadata.get("model_name") != "changed"


def _nested() -> list[BaseMessage]:
    """Messages whose values nest: content blocks, tool calls, metadata, an extra field."""
    return [
        HumanMessage(
            [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            ],
            additional_kwargs={"trace": {"path": ["a", "b"]}},
        ),
        AIMessage(
            "",
            tool_calls=[{"id": "c1", "name": "search", "args": {"q": ["cats", {"n": 1}]}}],
            response_metadata={"model_name": "fake", "usage": {"in": 3}},
            usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            custom={"kept": [1, 2]},
        ),
        ToolMessage("found", tool_call_id="c1", artifact={"rows": [[1, 2]]}),
    ]


def _change_everything(messages: list[BaseMessage]) -> None:
    human, ai, tool = messages
    assert isinstance(human.content, list) and isinstance(human.content[1], dict)
    human.content[1]["image_url"]["url"] = "changed"
    human.additional_kwargs["trace"]["path"].append("changed")
    assert isinstance(ai, AIMessage) and isinstance(tool, ToolMessage)
    ai.tool_calls[0]["args"]["q"][1]["n"] = 99
    ai.response_metadata["usage"]["in"] = 99
    ai.custom["kept"].append(3)  # type: ignore[attr-defined]
    tool.artifact["rows"][0].append(3)


async def test_changing_nested_values_read_changes_nothing_cached(alice: Scope) -> None:
    """Content blocks, tool calls, metadata and extra fields of the messages read are the
    caller's: changed in place, the next read still answers what was stored."""
    conversation = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conversation.id, model="fake-a")
    await history.aadd_messages(_nested())
    stored = await ChatMemoryHistory(alice, conversation.id, model="fake-a").aget_messages()
    first = await history.aget_messages()
    assert first == stored
    _change_everything(first)
    assert first != stored
    again = await history.aget_messages()
    assert again == stored and again is not first


class _Uncomparable:
    """A value that refuses to be compared, as a NumPy array does."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array is ambiguous")

    __hash__ = None  # type: ignore[assignment]


async def test_a_read_hands_out_again_the_messages_left_unchanged_and_copies_the_changed_anew(
    alice: Scope,
) -> None:
    """A long conversation is not copied whole on every turn: a message handed out and left
    unchanged is handed out again (as ``InMemoryChatMessageHistory`` hands out its own), one
    changed in place is replaced by a fresh copy of what was stored, at any depth, as is one
    given a value that cannot be compared."""
    conversation = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conversation.id, model="fake-a")
    await history.aadd_messages(_nested())
    stored = await ChatMemoryHistory(alice, conversation.id, model="fake-a").aget_messages()
    first = await history.aget_messages()
    second = await history.aget_messages()
    assert second == stored and second is not first
    assert all(a is b for a, b in zip(first, second, strict=True))

    ai = second[1]
    assert isinstance(ai, AIMessage)
    ai.tool_calls[0]["args"]["q"][1]["n"] = 99
    second[2].artifact = _Uncomparable()  # type: ignore[attr-defined]
    third = await history.aget_messages()
    assert third == stored
    assert [m is s for m, s in zip(third, second, strict=True)] == [True, False, False]

    await history.aadd_messages([HumanMessage("more")])
    fourth = await history.aget_messages()
    assert fourth[:3] == stored and fourth[3].text == "more"
    assert all(a is b for a, b in zip(fourth, third, strict=False))


def test_a_copy_is_a_deep_copy() -> None:
    """``copy_of`` answers what ``model_copy(deep=True)`` does, sharing nothing changeable."""
    originals = _nested()
    copies = [copy_of(m) for m in originals]
    assert copies == [m.model_copy(deep=True) for m in originals]
    assert [type(c) for c in copies] == [type(m) for m in originals]
    _change_everything(copies)
    assert originals == _nested()


def _finished_late() -> AIMessageChunk:
    """A v1 chunk marked last after it was built: read back, LangChain turns its tool call
    chunk block into the parsed tool call, whose ``args`` are the tool call's own."""
    args = '{"q": ["cats"]}'
    block = {"type": "tool_call_chunk", "id": "c1", "name": "search", "args": args, "index": 0}
    chunk = AIMessageChunk(
        [block],
        tool_call_chunks=[{"id": "c1", "name": "search", "args": args, "index": 0}],
        response_metadata={"output_version": "v1"},
    )
    chunk.chunk_position = "last"
    return chunk


async def test_values_shared_within_a_message_read_stay_shared(alice: Scope) -> None:
    """A message read is its cached one's ``model_copy(deep=True)``: a value the cached one
    holds in two places is one value in the copy too, as LangChain built it."""
    conversation = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conversation.id, model="fake-a")
    await history.aadd_messages([_finished_late()])
    [cached] = (await history._mirror.read(alice, conversation.id))[0]
    assert isinstance(cached, AIMessageChunk) and isinstance(cached.content[0], dict)
    assert cached.content[0]["args"] is cached.tool_calls[0]["args"]
    [read] = await history.aget_messages()
    assert isinstance(read, AIMessageChunk) and isinstance(read.content[0], dict)
    assert read.content[0]["args"] is read.tool_calls[0]["args"]
    read.tool_calls[0]["args"]["q"].append("dogs")
    assert read.content_blocks[0].get("args") == {"q": ["cats", "dogs"]}
    assert cached.tool_calls[0]["args"] == {"q": ["cats"]}


def test_a_copy_keeps_what_is_shared_and_cycles() -> None:
    """As ``model_copy(deep=True)``: one value held twice is one copy held twice, and a
    value that holds itself is copied, not recursed into forever."""
    shared: dict[str, object] = {"path": ["a"]}
    itself: list[object] = [1]
    itself.append(itself)
    message = HumanMessage("x", additional_kwargs={"a": shared, "b": [shared], "c": itself}, d=shared)
    copied = copy_of(message)
    kwargs = copied.additional_kwargs
    assert kwargs["a"] is kwargs["b"][0] is copied.d  # type: ignore[attr-defined]
    assert kwargs["a"] is not shared and kwargs["c"][1] is kwargs["c"] is not itself
    assert repr(copied) == repr(message.model_copy(deep=True))


@pytest.fixture
def statements(memory: ChatMemory) -> Iterator[list[str]]:
    """Each statement the store sends to the database from now on."""
    log: list[str] = []
    db = memory._db
    db.set_trace(lambda stmt: log.append(stmt.sql.sqlite if db.is_sqlite else stmt.sql.postgres))
    try:
        yield log
    finally:
        db.set_trace(None)


async def test_a_read_after_an_add_reads_only_the_newest_messages(
    alice: Scope, statements: list[str]
) -> None:
    history = await _warm(alice)
    await history.aadd_messages([HumanMessage("more"), AIMessage("still")])
    statements.clear()
    assert len(await history.aget_messages()) == 8
    reads = [" ".join(s.split()) for s in statements if "FROM chat_messages" in s and "SELECT" in s]
    assert reads and all("LIMIT" in s for s in reads), reads


async def test_an_add_the_store_refuses_writes_nothing(alice: Scope) -> None:
    history = await _warm(alice)
    with pytest.raises(InvalidInputError):
        await history.aadd_messages(
            [HumanMessage("fine"), AIMessage("ok", additional_kwargs={"trace": too_deep()})]
        )
    assert _texts(await history.aget_messages()) == ["u0", "a0", "u1", "a1", "u2", "a2"]
    assert len((await alice.get_conversation(history.conversation_id)).histories) == 3


async def test_a_message_over_the_store_limits_is_added_and_read_back_whole(alice: Scope) -> None:
    history = await _warm(alice, turns=1)
    essay = AIMessage("word " * 24_000, id="run-1")
    await history.aadd_messages([HumanMessage("Write an essay."), essay])
    read = await history.aget_messages()
    assert _texts(read) == ["u0", "a0", "Write an essay.", essay.text]
    assert read[-1] == essay
    stored = (await alice.transcript(history.conversation_id))[-1]
    assert essay.text.startswith(stored.content.split("\n[")[0])
    assert stored.content.endswith(" more characters in this message's native form]")
