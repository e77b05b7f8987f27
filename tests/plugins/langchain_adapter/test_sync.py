"""The synchronous entry points: invoke and stream, from another thread or a synchronous program."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from chatmemory_langchain import BackgroundLoop, ChatMemoryHistory
from langchain_core.messages import AIMessage, HumanMessage

from chatmemory import ChatMemory, Principal
from chatmemory.scope import Scope
from tests.plugins._threads import in_daemon_thread, owner_loop_beside
from tests.plugins.langchain_adapter._fakes import call, fake
from tests.plugins.langchain_adapter._helpers import agent, histories, rows, user


async def test_sync_invoke_and_stream_record_like_the_async_api(alice: Scope) -> None:
    conv = await alice.start_conversation()
    await asyncio.to_thread(
        agent(alice, conv.id, fake(call("add", "c1", a=1, b=2), "3")).invoke, user("1+2?")
    )
    resumed = fake("6", name="fake-b")
    graph = agent(alice, conv.id, resumed)
    await asyncio.to_thread(lambda: list(graph.stream(user("And 3+3?"), stream_mode="messages")))
    failing = agent(alice, conv.id, fake(call("explode", "c2", reason="sync boom")))
    with pytest.raises(RuntimeError, match="sync boom"):
        await asyncio.to_thread(failing.invoke, user("Break"))

    first, second, third = await histories(alice, conv.id)
    assert [m.role for m in first.messages or []] == ["user", "assistant", "tool", "assistant"]
    assert (first.status, second.status, third.status) == ("completed", "completed", "failed")
    assert rows(second.messages) == [("user", None, "And 3+3?"), ("assistant", "fake-b", "6")]
    assert [m.type for m in resumed.seen[0]] == ["system", "human", "ai", "tool", "ai", "human"]


async def test_sync_invoke_on_the_loop_that_owns_the_store_is_refused(alice: Scope) -> None:
    conv = await alice.start_conversation()
    with pytest.raises(RuntimeError, match="use ainvoke"):
        agent(alice, conv.id, fake("never")).invoke(user("Hi"))
    assert await histories(alice, conv.id) == []


def _synchronous_program(url: str) -> list[list[tuple[str, str | None, str]]]:
    with BackgroundLoop() as background:
        memory = background.run(ChatMemory.open(url))
        try:
            chat = memory.scoped(Principal("carol"))
            conv = background.run(chat.start_conversation())
            for model in (fake(call("add", "c1", a=2, b=2), "4"), fake("8", name="fake-b")):
                agent(chat, conv.id, model, loop=background).invoke(user("Sum?"))
            detail = background.run(chat.get_conversation(conv.id, messages=True))
        finally:
            background.run(memory.close())
    return [rows(h.messages) for h in detail.histories]


async def test_a_synchronous_program_uses_a_background_loop(db_url: str) -> None:
    recorded = await asyncio.to_thread(_synchronous_program, db_url)
    assert recorded == [
        [
            ("user", None, "Sum?"),
            ("assistant", "fake-a", ""),
            ("tool", None, "4"),
            ("assistant", "fake-a", "4"),
        ],
        [("user", None, "Sum?"), ("assistant", "fake-b", "8")],
    ]


def _idle_loop_program(url: str) -> list[list[tuple[str, str | None, str]]]:
    """A synchronous program that opens the store with ``loop.run_until_complete`` and builds the
    history and the agent inside it: that loop is idle whenever LangChain calls them."""
    loop = asyncio.new_event_loop()

    async def setup() -> tuple[ChatMemory, Scope, UUID, ChatMemoryHistory, Any]:
        memory = await ChatMemory.open(url)
        chat = memory.scoped(Principal("carol"))
        conv = await chat.start_conversation()
        # Parallel tool calls: LangGraph's sync API runs them, and their records, in threads.
        calls = AIMessage(
            "", tool_calls=[*call("add", "c1", a=1, b=1).tool_calls, *call("add", "c2", a=2, b=2).tool_calls]
        )
        graph = agent(chat, conv.id, fake(calls, "2 and 4", name="fake-b"))
        return memory, chat, conv.id, ChatMemoryHistory(chat, conv.id, model="fake-a"), graph

    memory, chat, conv_id, history, graph = loop.run_until_complete(setup())
    try:
        history.add_messages([HumanMessage("2+2?"), AIMessage("4")])
        graph.invoke(user("Again?"))
        asyncio.run(history.aadd_messages([HumanMessage("Thanks")]))  # from another loop
        texts = [m.text for m in history.messages]
        # The two tool results are stored as each tool returns: in either order.
        assert texts[:4] + sorted(texts[4:6]) + texts[6:] == [
            "2+2?",
            "4",
            "Again?",
            "",
            "2",
            "4",
            "2 and 4",
            "Thanks",
        ]
        detail = loop.run_until_complete(chat.get_conversation(conv_id, messages=True))
    finally:
        loop.run_until_complete(memory.close())
        loop.close()
    return [rows(h.messages) for h in detail.histories]


async def test_objects_made_on_a_loop_that_is_now_idle_never_wait_for_it(db_url: str) -> None:
    """Built inside ``loop.run_until_complete``, then called between two runs of that loop: the
    calls run (they used to wait forever for the idle loop), parallel ones taking turns."""
    recorded = await in_daemon_thread(_idle_loop_program, db_url)
    first, run, last = recorded
    assert (first, last) == (
        [("user", None, "2+2?"), ("assistant", "fake-a", "4")],
        [("user", None, "Thanks")],
    )
    assert run[:2] + sorted(run[2:4]) + run[4:] == [
        ("user", None, "Again?"),
        ("assistant", "fake-b", ""),
        ("tool", None, "2"),
        ("tool", None, "4"),
        ("assistant", "fake-b", "2 and 4"),
    ]


def _closed_loop_program(url: str) -> list[str]:
    """The store opened and the history built inside ``asyncio.run``, which closes its loop."""
    with BackgroundLoop() as background:
        memory = background.run(ChatMemory.open(url))
        try:

            async def setup() -> ChatMemoryHistory:
                conv = await memory.scoped(Principal("carol")).start_conversation()
                return ChatMemoryHistory(memory.scoped(Principal("carol")), conv.id, model="fake-a")

            history = asyncio.run(setup())
            try:
                history.add_messages([HumanMessage("Hi")])
                return [m.text for m in history.messages]
            finally:
                history.close()
        finally:
            background.run(memory.close())


async def test_a_history_made_inside_asyncio_run_works_after_it_returns(db_url: str) -> None:
    assert await in_daemon_thread(_closed_loop_program, db_url) == ["Hi"]


def _worker_thread_program(url: str) -> tuple[list[str], int, int]:
    """A history built inside ``loop.run_until_complete`` and written synchronously from a
    worker thread while the thread that built it goes on using its loop."""
    loop = asyncio.new_event_loop()
    memory = loop.run_until_complete(ChatMemory.open(url))
    try:

        async def setup() -> ChatMemoryHistory:
            conv = await memory.scoped(Principal("carol")).start_conversation()
            return ChatMemoryHistory(memory.scoped(Principal("carol")), conv.id, model="fake-a")

        history = loop.run_until_complete(setup())

        def write() -> None:
            for i in range(20):
                history.add_messages([HumanMessage(f"w{i}")])

        errors, turns = owner_loop_beside(loop, write)
        stored = loop.run_until_complete(history.aget_messages())
        history.close()
        return errors, turns, len(stored)
    finally:
        loop.run_until_complete(memory.close())
        loop.close()


async def test_a_worker_thread_writing_synchronously_leaves_the_owners_idle_loop_alone(db_url: str) -> None:
    errors, turns, stored = await in_daemon_thread(_worker_thread_program, db_url)
    assert errors == []
    assert turns > 0 and stored == 20
