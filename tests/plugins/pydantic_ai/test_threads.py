"""``run_sync`` from threads, each with an event loop of its own, through one agent-level capability.

pydantic-ai's ``run_sync`` runs the agent on the calling thread's event loop (see
pydantic/pydantic-ai ``tests/test_agent.py``, ``test_run_sync_*``); a web server's worker threads
do that at once. Each run must be recorded whole, and a later run must resume all of them as a
fresh read of the conversation would give them.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chatmemory_pydantic_ai import ChatMemoryCapability, load_messages

from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import Script, adder, as_json


def run_sync_on_a_loop_of_its_own(agent: Any, prompt: str) -> Any:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return agent.run_sync(prompt)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def test_run_sync_from_several_threads_at_once_records_every_run(alice: Scope) -> None:
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    agent = adder(Script("fn-A").model, capabilities=[capability])

    def run_all() -> list[Any]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda i: run_sync_on_a_loop_of_its_own(agent, f"sum {i}"), range(4)))

    results = await asyncio.wait_for(asyncio.to_thread(run_all), timeout=30)

    histories = (await alice.get_conversation(conv.id, messages=True)).histories
    assert sorted(h.messages[0].content for h in histories if h.messages) == [f"sum {i}" for i in range(4)]
    assert [(h.status, [m.role for m in h.messages or []]) for h in histories] == [
        ("completed", ["user", "assistant", "tool", "assistant"])
    ] * 4
    # The capability read the runs as they were stored, side by side; it must resume from what a
    # full read gives: each run's messages together, every tool call with its result.
    later, fresh = Script("fn-B", tool=False), Script("fn-B", tool=False)
    await adder(fresh.model).run("total?", message_history=await load_messages(alice, conv.id))
    await adder(later.model, capabilities=[capability]).run("total?")
    assert len(later.received[0]) == 4 * 4 + 1
    assert as_json(later.received[0][:-1]) == as_json(fresh.received[0][:-1])
    assert {r.run_id for r in results} == {h.metadata["run_id"] for h in histories if h.metadata}
