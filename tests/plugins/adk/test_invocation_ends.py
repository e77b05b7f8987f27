"""An invocation whose end ADK never reports is closed by the session's next invocation.

ADK reports an invocation's end only to plugins (``after_run_callback``,
``on_run_error_callback``), and to none when the task running it is cancelled or its process
is killed. ADK runs a session's invocations one after another, so the session's next
invocation closes the previous one's history when its end can no longer be reported. Driven
the ways ADK's own samples consume a runner: to the end, and leaving the event loop at the
final response (its quickstart's ``break``), with and without ``ProvenancePlugin``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from chatmemory_adk import ChatMemorySessionService, ProvenancePlugin
from chatmemory_adk.service import UNCLOSED
from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions, EventCompaction
from google.adk.runners import Runner
from google.genai import types

from chatmemory import ChatMemory, History, Principal
from tests.plugins.adk._agent import APP, USER, FakeLlm, run_turn
from tests.plugins.adk.test_runner import ROOT

CHAT = Principal(USER, tenant=APP)


async def histories(memory: ChatMemory) -> list[History]:
    chat = memory.scoped(CHAT)
    (summary,) = (await chat.list_conversations()).items
    return list((await chat.get_conversation(summary.id)).histories)


async def statuses(memory: ChatMemory) -> list[tuple[str, str | None]]:
    return [(h.status, h.error) for h in await histories(memory)]


async def settled_statuses(memory: ChatMemory, done: Callable[[list[tuple[str, str | None]]], bool]) -> Any:
    """The histories' statuses once ``done`` holds for them (an async generator closed by the
    loop's finalizer reports its end a moment later), or after 10 s."""
    deadline = time.monotonic() + 10
    while not done(found := await statuses(memory)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return found


async def session(memory: ChatMemory) -> ChatMemorySessionService:
    service = ChatMemorySessionService(memory)
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    return service


def make_runner(service: ChatMemorySessionService, agent: LlmAgent, plugin: bool) -> Runner:
    plugins = [ProvenancePlugin(service)] if plugin else []
    return Runner(app=App(name=APP, root_agent=agent, plugins=plugins), session_service=service)


def message(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


async def test_without_the_plugin_each_invocation_closes_the_one_before(memory: ChatMemory) -> None:
    service = await session(memory)
    await run_turn(service, "m", "s", "please add 2 and 3")
    await run_turn(service, "m", "s", "hello")
    await run_turn(service, "m", "s", "hello again")
    first, second, third = await histories(memory)
    assert [(h.status, h.error) for h in (first, second)] == [("completed", None), ("completed", None)]
    # the tokens its two model events used, as ProvenancePlugin's close records them
    assert first.usage == {"input_tokens": 1 + 3, "output_tokens": 2, "total_tokens": 2 + 4}
    assert third.status == "running"  # nothing tells its end yet


@pytest.mark.parametrize("plugin", [False, True], ids=["no-plugin", "plugin"])
async def test_a_consumer_leaving_at_the_final_response_gets_completed_histories(
    memory: ChatMemory, plugin: bool
) -> None:
    """ADK's quickstart loop: ``break`` at the final response, the next turn in the same task
    before the loop's finalizer closes the runner's generator (which then reports the end)."""
    service = await session(memory)
    agent = LlmAgent(name="calc", model=FakeLlm(model="m"), instruction="You add.")
    runner = make_runner(service, agent, plugin)
    for text in ("hello", "again", "once more"):
        async for event in runner.run_async(user_id=USER, session_id="s", new_message=message(text)):
            if event.is_final_response():
                break
    expected = [("completed", None)] * (3 if plugin else 2) + ([] if plugin else [("running", None)])
    assert await settled_statuses(memory, lambda found: found == expected) == expected


@pytest.mark.parametrize("plugin", [False, True], ids=["no-plugin", "plugin"])
async def test_an_invocation_whose_task_was_cancelled_is_closed_by_the_next(
    memory: ChatMemory, plugin: bool
) -> None:
    service = await session(memory)
    entered = asyncio.Event()

    async def add(a: int, b: int) -> int:
        """Add two numbers, slowly."""
        entered.set()
        await asyncio.Event().wait()
        return a + b

    agent = LlmAgent(name="calc", model=FakeLlm(model="m"), instruction="You add.", tools=[add])
    runner = make_runner(service, agent, plugin)

    async def turn(text: str) -> None:
        async for _ in runner.run_async(user_id=USER, session_id="s", new_message=message(text)):
            pass

    task = asyncio.create_task(turn("please add 2 and 3"))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await statuses(memory) == [("running", None)]  # the task is kept, as its caller may

    await turn("hello")
    cancelled, later = await histories(memory)
    assert (cancelled.status, cancelled.error) == ("failed", UNCLOSED)
    assert later.status == ("completed" if plugin else "running")


async def test_a_failed_invocation_without_the_plugin_is_closed_failed_by_the_next(
    memory: ChatMemory,
) -> None:
    service = await session(memory)
    with pytest.raises(RuntimeError, match="boom"):
        await run_turn(service, "m", "s", "explode")
    await run_turn(service, "m", "s", "hello")
    failed, _ = await histories(memory)
    assert failed.status == "failed"
    assert failed.error == "RuntimeError: boom"


async def test_a_reported_end_is_not_overwritten(memory: ChatMemory) -> None:
    service = await session(memory)
    with pytest.raises(RuntimeError, match="boom"):
        await run_turn(service, "m", "s", "explode", plugins=[ProvenancePlugin(service)])
    await run_turn(service, "m", "s", "hello")  # without the plugin: nothing reports its end
    assert await statuses(memory) == [("failed", "RuntimeError: boom"), ("running", None)]


async def test_a_new_service_object_per_invocation_closes_the_previous(memory: ChatMemory) -> None:
    """A service made per request: the previous invocation is found in the store."""
    await (await session(memory)).close()
    for text in ("please add 2 and 3", "hello", "hello again"):
        await run_turn(ChatMemorySessionService(memory), "m", "s", text)
    assert await statuses(memory) == [("completed", None), ("completed", None), ("running", None)]


def in_another_process(db_url: str, text: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.plugins.adk._agent", db_url, "s", "m", text],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def test_an_invocation_whose_process_was_killed_is_closed_failed(
    db_url: str, memory: ChatMemory
) -> None:
    service = await session(memory)
    child = in_another_process(db_url, "die")
    assert child.wait(timeout=120) == -9
    (killed,) = await histories(memory)
    assert (killed.status, (killed.metadata or {}).get("pid")) == ("running", child.pid)

    await run_turn(service, "m", "s", "hello")
    assert (await statuses(memory))[0] == ("failed", UNCLOSED)


async def test_an_invocation_of_another_process_still_running_is_closed_as_it_can_store_no_more(
    db_url: str, memory: ChatMemory
) -> None:
    """Another worker's invocation, stopped in a tool that never returns: once this worker's
    invocation is stored, ADK refuses that one's next event as stale, so it is over."""
    service = await session(memory)
    child = in_another_process(db_url, "hang")
    try:
        deadline = time.monotonic() + 120
        chat = memory.scoped(CHAT)
        while time.monotonic() < deadline:  # until its tool call is stored
            found = (await chat.list_conversations()).items
            if found and found[0].message_count >= 2:
                break
            assert child.poll() is None
            await asyncio.sleep(0.05)
        await run_turn(service, "m", "s", "hello")
        hanging, _ = await histories(memory)
        assert (hanging.status, hanging.error, (hanging.metadata or {}).get("pid")) == (
            "failed",
            UNCLOSED,
            child.pid,
        )
        assert child.poll() is None and os.getpid() != child.pid
    finally:
        child.kill()
        child.wait(timeout=60)


async def test_a_compaction_event_is_a_completed_history_of_its_own(memory: ChatMemory) -> None:
    """ADK appends a compaction (a summary of earlier events) as an event of a fresh invocation
    authored by ``user``: it is complete once stored, and the turn before it is closed."""
    service = await session(memory)
    await run_turn(service, "m", "s", "hello")
    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert stored is not None
    summary = EventCompaction(
        start_timestamp=stored.events[0].timestamp,
        end_timestamp=stored.events[-1].timestamp,
        compacted_content=types.Content(role="model", parts=[types.Part(text="they said hello")]),
    )
    compaction = Event(author="user", invocation_id=Event.new_id(), actions=EventActions(compaction=summary))
    await service.append_event(stored, compaction)
    await run_turn(service, "m", "s", "hello again")
    assert await statuses(memory) == [("completed", None), ("completed", None), ("running", None)]


def event(invocation: str, author: str, text: str | None = None, **actions: Any) -> Event:
    content = types.Content(role="user" if author == "user" else "model", parts=[types.Part(text=text)])
    return Event(
        invocation_id=invocation,
        author=author,
        content=content if text is not None else None,
        actions=EventActions(**actions),
    )


async def test_bookkeeping_within_an_invocation_neither_closes_nor_splits_it(memory: ChatMemory) -> None:
    """A compaction ADK appends before a model call inside an invocation (token threshold),
    and a rewind, are invocations of one event of their own, closed at once; the invocation
    they came within goes on in its history, and the next invocation closes it."""
    service = await session(memory)
    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert stored is not None
    summary = EventCompaction(
        start_timestamp=0.0,
        end_timestamp=1.0,
        compacted_content=types.Content(role="model", parts=[types.Part(text="summary")]),
    )
    for appended in (
        event("inv-x", "user", "hello"),
        event(Event.new_id(), "user", compaction=summary),
        event("inv-x", "calc", "hi"),
        event(Event.new_id(), "user", rewind_before_invocation_id="inv-0"),
        event("inv-y", "user", "again"),
    ):
        await service.append_event(stored, appended)
    chat = memory.scoped(CHAT)
    (summary_row,) = (await chat.list_conversations()).items
    found = (await chat.get_conversation(summary_row.id, messages=True)).histories
    assert [(h.status, [m.content for m in h.messages or []]) for h in found] == [
        ("completed", ["hello", "hi"]),
        ("completed", [""]),
        ("completed", [""]),
        ("running", ["again"]),
    ]


# ADK's own generators, closed at each loop's shutdown, complain (not the store).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_new_event_loop_per_request_leaving_at_the_final_response_gets_completed_histories(
    db_url: str,
) -> None:
    """A synchronous server running each turn with ``asyncio.run`` and ADK's quickstart loop
    (``break`` at the final response), ``ProvenancePlugin`` on: the loop's shutdown closes the
    runner's generator while its report is written, and may cut it off; the next turn closes
    the history all the same."""

    async def request(service: ChatMemorySessionService, text: str) -> None:
        agent = LlmAgent(name="calc", model=FakeLlm(model="m"), instruction="You add.")
        runner = make_runner(service, agent, plugin=True)
        async for answer in runner.run_async(user_id=USER, session_id="s", new_message=message(text)):
            if answer.is_final_response():
                break

    async def opened() -> ChatMemorySessionService:
        service = ChatMemorySessionService.from_url(db_url)
        await service.create_session(app_name=APP, user_id=USER, session_id="s")
        return service

    service = asyncio.run(opened())
    try:
        for text in ("one", "two", "three", "four"):
            asyncio.run(request(service, text))

        async def read() -> list[str]:
            async with ChatMemory.open(db_url) as memory:
                return [status for status, _ in await statuses(memory)]

        assert asyncio.run(read())[:3] == ["completed"] * 3
    finally:
        asyncio.run(service.close())
