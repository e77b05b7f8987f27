"""The store contract the SDK's own session suites pin down, run against ``ChatMemorySession``.

Rewritten from openai/openai-agents-python ``tests/memory/test_session.py``
(``test_sqlite_session_memory_direct``, ``..._pop_item``, ``test_session_memory_pop_different_sessions``,
``..._get_items_with_limit``, ``..._unicode_content``, ``..._special_characters_and_sql_injection``,
``..._concurrent_access``, the ``SessionSettings`` tests), ``tests/memory/test_session_limit.py``
(``test_session_limit_drops_unmatched_history_function_call_output``) and
``tests/extensions/memory/test_sqlalchemy_session.py`` (``test_concurrent_pop_item_returns_each_row_once``,
``test_add_items_concurrent_first_access_with_shared_session_cross_loop``), on both backends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest
from agents import RunConfig, Runner, SessionSettings
from agents.testing import assistant_message
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import ChatMemory, Conversation, NewMessage, Principal, TextPart, ToolCallPart
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, make_agent


def contents(items: list[Any]) -> list[Any]:
    return [item.get("content") for item in items]


async def test_direct_add_get_clear(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id)
    items: list[Any] = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there!"}]
    await session.add_items(items)
    assert await session.get_items() == items

    await session.clear_session()
    assert await session.get_items() == []
    await session.add_items(items[:1])
    assert await session.get_items() == items[:1]


async def test_pop_item_returns_newest_first(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id)
    assert await session.pop_item() is None
    items: list[Any] = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there!"},
        {"role": "user", "content": "How are you?"},
    ]
    await session.add_items(items)
    assert [await session.pop_item() for _ in range(4)] == [items[2], items[1], items[0], None]
    assert await session.get_items() == []


async def test_pop_affects_only_its_conversation(alice: Scope, conversation: Conversation) -> None:
    other = await alice.start_conversation()
    session_1 = ChatMemorySession(alice, conversation.id)
    session_2 = ChatMemorySession(alice, other.id)
    await session_1.add_items([{"role": "user", "content": "Session 1 message"}])
    await session_2.add_items(
        [
            {"role": "user", "content": "Session 2 message 1"},
            {"role": "user", "content": "Session 2 message 2"},
        ]
    )
    popped = await session_2.pop_item()
    assert popped is not None
    assert popped.get("content") == "Session 2 message 2"
    assert contents(await session_1.get_items()) == ["Session 1 message"]
    assert contents(await session_2.get_items()) == ["Session 2 message 1"]


async def test_get_items_with_limit(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id)
    items: list[Any] = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"Message {i}"} for i in range(6)
    ]
    await session.add_items(items)
    assert await session.get_items() == items
    assert await session.get_items(limit=2) == items[-2:]
    assert await session.get_items(limit=4) == items[-4:]
    assert await session.get_items(limit=10) == items
    assert await session.get_items(limit=0) == []


async def test_unicode_and_sql_lookalikes_round_trip(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id)
    items: list[Any] = [
        {"role": "user", "content": "こんにちは"},
        {"role": "assistant", "content": "😊👍"},
        {"role": "user", "content": "O'Reilly"},
        {"role": "assistant", "content": "DROP TABLE sessions;"},
        {"role": "user", "content": '"SELECT * FROM users WHERE name = "admin";"'},
        {"role": "assistant", "content": "Robert'); DROP TABLE students;--"},
    ]
    await session.add_items(items)
    assert await ChatMemorySession(alice, conversation.id).get_items() == items


async def test_two_sessions_popping_at_once_pop_each_item_once(
    alice: Scope, conversation: Conversation
) -> None:
    writer = ChatMemorySession(alice, conversation.id)
    other = ChatMemorySession(alice, conversation.id)
    await writer.add_items([{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"}])

    for _ in range(3):  # several rounds: the race is timing-dependent
        popped = await asyncio.wait_for(asyncio.gather(writer.pop_item(), other.pop_item()), timeout=30)
        assert sorted(contents([p for p in popped if p is not None])) == ["first", "second"]
        assert await writer.get_items() == []
        await writer.add_items(
            [{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"}]
        )


async def test_many_concurrent_pops_return_every_item_exactly_once(
    alice: Scope, conversation: Conversation
) -> None:
    sessions = [ChatMemorySession(alice, conversation.id) for _ in range(4)]
    items: list[Any] = [{"role": "user", "content": f"item {i}"} for i in range(8)]
    await sessions[0].add_items(items)
    popped = await asyncio.wait_for(
        asyncio.gather(*(sessions[i % 4].pop_item() for i in range(10))), timeout=60
    )
    assert sorted(contents([p for p in popped if p is not None])) == sorted(contents(items))
    assert popped.count(None) == 2


# -- session settings --------------------------------------------------------------------------


def test_session_settings_default_to_an_empty_settings_object(alice: Scope) -> None:
    session = ChatMemorySession(alice, "00000000-0000-7000-8000-000000000000")
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit is None


def test_session_settings_are_normalised_from_a_dict(alice: Scope) -> None:
    session = ChatMemorySession(alice, "00000000-0000-7000-8000-000000000000", session_settings={"limit": 0})
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit == 0
    assert session.session_settings.resolve({"limit": 4}).limit == 4
    typed = ChatMemorySession(alice, "x", session_settings=SessionSettings(limit=5))
    assert typed.session_settings is not None
    assert typed.session_settings.limit == 5


def test_unknown_session_settings_are_rejected(alice: Scope) -> None:
    with pytest.raises(TypeError, match="Unknown session settings: limitt"):
        ChatMemorySession(alice, "x", session_settings={"limitt": 1})
    with pytest.raises(TypeError, match="SessionSettings instance or a dict"):
        ChatMemorySession(alice, "x", session_settings=5)  # type: ignore[arg-type]


async def test_get_items_uses_the_settings_limit_unless_given_one(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id, session_settings={"limit": 3})
    items: list[Any] = [{"role": "user", "content": f"Message {i}"} for i in range(10)]
    await session.add_items(items)
    assert await session.get_items() == items[-3:]
    assert await session.get_items(limit=2) == items[-2:]


async def test_a_dict_limit_of_zero_sends_no_history(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id, session_settings={"limit": 0})
    await session.add_items([{"role": "user", "content": "old"}, {"role": "assistant", "content": "reply"}])
    model = NamedModel("m", [[assistant_message("fresh")]])
    await Runner.run(make_agent("t", model), "new", session=session)
    assert model.last_call is not None
    assert contents(model.last_call.input) == ["new"]


async def test_run_config_session_settings_override_the_session(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id, session_settings=SessionSettings(limit=100))
    await session.add_items([{"role": "user", "content": f"Turn {i}"} for i in range(10)])
    model = NamedModel("m", [[assistant_message("Got it")]])
    config = RunConfig(session_settings=SessionSettings(limit=2))
    await Runner.run(make_agent("t", model), "New question", session=session, run_config=config)
    assert model.last_call is not None
    assert contents(model.last_call.input) == ["Turn 8", "Turn 9", "New question"]


@pytest.mark.parametrize("runner", ["run", "run_streamed"])
async def test_a_limit_that_cuts_a_tool_call_from_its_output_sends_neither(
    runner: str, alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    answer = {"type": "output_text", "text": "It is sunny.", "annotations": []}
    history: list[Any] = [
        {"role": "user", "content": "What is the weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "message", "role": "assistant", "content": [answer]},
    ]
    await session.add_items(history)
    assert await session.get_items(limit=2) == history[-2:]

    model = NamedModel("m", [[assistant_message("Tomorrow is sunny too.")]])
    config = RunConfig(session_settings=SessionSettings(limit=2))
    if runner == "run":
        await Runner.run(make_agent("t", model), "What about tomorrow?", session=session, run_config=config)
    else:
        streamed = Runner.run_streamed(
            make_agent("t", model), "What about tomorrow?", session=session, run_config=config
        )
        async for _ in streamed.stream_events():
            pass
    assert model.last_call is not None
    assert model.last_call.input == [history[-1], {"role": "user", "content": "What about tomorrow?"}]


# -- threads, each with its own event loop -----------------------------------------------------


async def test_writes_from_a_thread_pool_each_with_its_own_loop(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    items: list[Any] = [{"role": "user", "content": f"Message {i}"} for i in range(10)]

    def add_item(item: Any) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(asyncio.wait_for(session.add_items([item]), timeout=30))
        finally:
            loop.close()

    def write_all() -> None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
            list(pool.map(add_item, items))

    await asyncio.wait_for(asyncio.to_thread(write_all), timeout=60)
    assert sorted(contents(await session.get_items())) == sorted(contents(items))


async def test_one_session_shared_by_two_loops(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id)
    barrier = threading.Barrier(2)
    results: list[tuple[str, str]] = []

    def worker(content: str) -> None:
        async def run() -> None:
            barrier.wait()
            await asyncio.wait_for(session.add_items([{"role": "user", "content": content}]), timeout=30)
            await asyncio.wait_for(session.get_items(limit=5), timeout=30)

        try:
            asyncio.run(run())
            results.append((content, "ok"))
        except Exception as error:  # the outcome is asserted below
            results.append((content, f"{type(error).__name__}: {error}"))

    threads = [threading.Thread(target=worker, args=(c,)) for c in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join, 60)

    assert sorted(results) == [("one", "ok"), ("two", "ok")]
    assert sorted(contents(await session.get_items())) == ["one", "two"]


async def test_popping_a_message_that_holds_several_items_pops_one_item_at_a_time(
    alice: Scope, conversation: Conversation
) -> None:
    """As ``test_sqlite_session_memory_pop_item``: each pop returns the newest item and keeps the
    rest, even where one message written elsewhere (a reply's text and its tool call) holds two."""
    run = await alice.start_history(conversation.id, model="other-model")
    reply = [TextPart(text="Adding."), ToolCallPart(id="c1", name="add", arguments={})]
    await alice.append_messages(run.id, [NewMessage("user", "Add 1 and 2"), NewMessage("assistant", reply)])
    session = ChatMemorySession(alice, conversation.id)
    items = await session.get_items()
    assert [item.get("type", "message") for item in items] == ["message", "message", "function_call"]

    assert await session.pop_item() == items[2]
    assert await ChatMemorySession(alice, conversation.id).get_items() == items[:2]
    assert await session.pop_item() == items[1]
    assert await session.pop_item() == items[0]
    assert await session.pop_item() is None
    kept = [h for h in (await alice.get_conversation(conversation.id)).histories if h.id != run.id]
    assert [(h.model, h.status, (h.metadata or {}).get("pop")) for h in kept] == [
        ("other-model", "completed", {"replaced": 1})
    ]


async def test_a_pop_leaves_another_writers_pending_and_failed_messages(
    alice: Scope, conversation: Conversation
) -> None:
    """Like the SDK's own stores, a pop removes exactly one item: messages another writer has
    started (a server streaming a reply, say) or failed stay, and their writer can go on."""
    session = ChatMemorySession(alice, conversation.id)
    await Runner.run(make_agent("x", NamedModel("m", [[assistant_message("a1")]])), "q1", session=session)
    other = await alice.start_history(conversation.id, model="other-writer")
    started = [NewMessage("assistant", "", status="pending") for _ in range(2)]
    pending, failed = await alice.append_messages(other.id, started)
    await alice.fail_message(failed.id, error="the stream broke")

    popped = await session.pop_item()

    assert popped is not None
    assert (popped.get("role"), contents(await session.get_items())) == ("assistant", ["q1"])
    histories = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert {pending.id, failed.id} <= {m.id for h in histories for m in h.messages or []}
    await alice.complete_message(pending.id, content="late reply")
    assert contents(await session.get_items()) == ["q1", "late reply"]


async def test_popping_one_of_several_items_leaves_another_writers_pending_message(
    alice: Scope, conversation: Conversation
) -> None:
    run = await alice.start_history(conversation.id, model="other-model")
    reply = [TextPart(text="Adding."), ToolCallPart(id="c1", name="add", arguments={})]
    await alice.append_messages(run.id, [NewMessage("user", "Add 1 and 2"), NewMessage("assistant", reply)])
    other = await alice.start_history(conversation.id, model="other-writer")
    (pending,) = await alice.append_messages(other.id, [NewMessage("assistant", "", status="pending")])
    session = ChatMemorySession(alice, conversation.id)
    items = await session.get_items()

    assert await session.pop_item() == items[2]
    assert await ChatMemorySession(alice, conversation.id).get_items() == items[:2]
    assert await session.pop_item() == items[1]
    histories = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert pending.id in {m.id for h in histories for m in h.messages or []}
    kept = [h for h in histories if h.id not in (run.id, other.id)]
    assert [(h.model, h.status, (h.metadata or {}).get("pop")) for h in kept] == [
        ("other-model", "completed", {"replaced": 1})
    ]


class _ClosedAtOnce(Scope):
    """Alice's scope, where another run closes a replacement's history the moment it lands, as
    a run starting meanwhile closes the conversation's newest ``running`` history."""

    async def replace_messages(self, *args: Any, **kwargs: Any) -> Any:
        replaced = await super().replace_messages(*args, **kwargs)
        if kwargs.get("history_id") is not None:
            await super().finish_history(kwargs["history_id"], status="failed", error="closed by another run")
        return replaced


async def test_a_pop_whose_kept_items_history_another_run_closes_still_returns_its_item(
    memory: ChatMemory, alice: Scope, conversation: Conversation
) -> None:
    run = await alice.start_history(conversation.id, model="other-model")
    reply = [TextPart(text="Adding."), ToolCallPart(id="c1", name="add", arguments={})]
    await alice.append_messages(run.id, [NewMessage("user", "Add 1 and 2"), NewMessage("assistant", reply)])
    session = ChatMemorySession(_ClosedAtOnce(memory._db, Principal("alice"), memory.limits), conversation.id)
    items = await session.get_items()

    assert await session.pop_item() == items[2]  # popped once, and returned: never lost
    assert await session.get_items() == items[:2]
