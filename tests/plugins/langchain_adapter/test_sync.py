"""The synchronous entry points: invoke and stream, from another thread or a synchronous program."""

from __future__ import annotations

import asyncio

import pytest
from chatmemory_langchain import BackgroundLoop

from chatmemory import ChatMemory, Principal
from chatmemory.scope import Scope
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
