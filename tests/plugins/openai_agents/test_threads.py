"""Runs of one conversation from several threads at once, each thread with its own event loop and
session object, as the SDK's own suites drive a store from thread pools
(openai/openai-agents-python ``tests/extensions/memory/test_sqlalchemy_session.py``,
``test_add_items_concurrent_first_access_across_from_url_sessions_cross_loop``): each run is
one history, and no run takes another's history, just started, for one a dead run left open.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from agents import RunContextWrapper, Runner
from agents.testing import assistant_message, function_call
from chatmemory_openai_agents import ChatMemorySession
from chatmemory_openai_agents import _open_runs as open_runs

from chatmemory import Conversation, recording
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, add, make_agent


@pytest.mark.parametrize(
    ("shared", "hooked"),
    [(False, True), (True, True), (True, False)],
    ids=["a session each", "one session, hooked", "one session"],
)
async def test_run_sync_from_several_threads_at_once_records_every_run(
    shared: bool, hooked: bool, alice: Scope, conversation: Conversation
) -> None:
    one_session = ChatMemorySession(alice, conversation.id)

    def one_run(i: int) -> Any:
        steps = [[function_call("add", {"a": i, "b": 1}, call_id=f"c{i}")], [assistant_message(f"{i + 1}")]]
        agent = make_agent("calc", NamedModel("m", steps), tools=[add])
        session = one_session if shared else ChatMemorySession(alice, conversation.id)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            hooks = {"hooks": session.hooks} if hooked else {}
            return Runner.run_sync(agent, f"{i}+1?", session=session, **hooks)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def run_all() -> list[Any]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(one_run, range(8)))

    results = await asyncio.wait_for(asyncio.to_thread(run_all), timeout=30)

    assert sorted(r.final_output for r in results) == sorted(f"{i + 1}" for i in range(8))
    histories = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert (
        sorted((h.status, h.error, len(h.messages or [])) for h in histories) == [("completed", None, 4)] * 8
    )
    assert not any("continues" in (h.metadata or {}) for h in histories)
    # What the process keeps about runs in flight is gone with them: nothing grows run after run.
    assert not recording._STARTS
    assert not any(open_runs.holder(h.id) for h in histories)


ROUNDS = 8


async def test_one_session_saving_the_runs_of_many_threads_at_once_keeps_every_item(
    alice: Scope, conversation: Conversation
) -> None:
    """One session shared by threads that each save their runs' items through it at once, each
    thread on its own loop, with the interpreter switching threads as often as it can (as a busy
    machine does): every run is recorded, and the session's own books of the runs it serves
    (taken in, looked over, dropped with each run's context) never break under the others."""
    session = ChatMemorySession(alice, conversation.id)
    threads, runs = 8, 12

    def save_runs(thread: int) -> None:
        async def runs_of_this_thread() -> None:
            for i in range(runs):
                context: RunContextWrapper[None] = RunContextWrapper(context=None)
                await session.add_items([{"role": "user", "content": f"{thread}-{i}?"}], wrapper=context)
                answer = assistant_message(f"{thread}-{i}!").model_dump(exclude_unset=True)
                await session.add_items([answer], wrapper=context)

        asyncio.run(runs_of_this_thread())

    def all_threads() -> None:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(save_runs, range(threads)))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(ROUNDS):  # a round failed about one time in four while the books raced
            with ThreadPoolExecutor(max_workers=threads) as pool:
                await asyncio.wait_for(
                    asyncio.to_thread(lambda: list(pool.map(save_runs, range(threads)))), 60
                )
    finally:
        sys.setswitchinterval(interval)

    histories = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert len(histories) == ROUNDS * threads * runs
    assert {(h.status, len(h.messages or [])) for h in histories} == {("completed", 2)}
    asked = sorted(m.content for h in histories for m in h.messages or [] if m.role == "user")
    assert asked == sorted(f"{t}-{i}?" for t in range(threads) for i in range(runs) for _ in range(ROUNDS))
