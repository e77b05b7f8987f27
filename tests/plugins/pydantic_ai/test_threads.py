"""``run_sync`` from threads, each with an event loop of its own, through one agent-level capability.

pydantic-ai's ``run_sync`` runs the agent on the calling thread's event loop (see
pydantic/pydantic-ai ``tests/test_agent.py``, ``test_run_sync_*``); a web server's worker threads
do that at once. Each run must be recorded whole, and a later run must resume all of them as a
fresh read of the conversation would give them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chatmemory_pydantic_ai import ChatMemoryCapability

from chatmemory import HistoryDetail
from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import Script, adder, resumed_and_read


def run_sync_on_a_loop_of_its_own(agent: Any, prompt: str) -> Any:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return agent.run_sync(prompt)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def shown(histories: Sequence[HistoryDetail], script: Script) -> str:
    """The stored histories and what the model was sent on each call, for a failure's message."""
    lines = []
    for h in histories:
        run = (h.metadata or {}).get("run_id")
        lines.append(f"history {h.id} {h.status} started {h.created_at} run {run}")
        lines += [f"  {m.seq} {m.role}: {m.content!r}" for m in h.messages or ()]
    for sent in script.received:
        prompts = [p.content for m in sent for p in m.parts if p.part_kind == "user-prompt"]
        kinds = [[p.part_kind for p in m.parts] for m in sent]
        lines.append(f"model sent, for {prompts[-1] if prompts else None!r}: {kinds}")
    return "\n".join(lines)


async def test_run_sync_from_several_threads_at_once_records_every_run(alice: Scope) -> None:
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    script = Script("fn-A")
    agent = adder(script.model, capabilities=[capability])

    def run_all() -> list[Any]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            runs = [pool.submit(run_sync_on_a_loop_of_its_own, agent, f"sum {i}") for i in range(4)]
        return [run.exception() or run.result() for run in runs]

    results = await asyncio.wait_for(asyncio.to_thread(run_all), timeout=30)

    histories = (await alice.get_conversation(conv.id, messages=True)).histories
    detail = shown(histories, script)
    assert not [r for r in results if isinstance(r, BaseException)], f"{results!r}\n{detail}"
    prompts = sorted(h.messages[0].content for h in histories if h.messages)
    assert prompts == [f"sum {i}" for i in range(4)], detail
    assert [(h.status, [m.role for m in h.messages or []]) for h in histories] == [
        ("completed", ["user", "assistant", "tool", "assistant"])
    ] * 4, detail
    # The capability read the runs as they were stored, side by side; it must resume from what a
    # full read gives: each run's messages together, every tool call with its result.
    resumed, read = await resumed_and_read(alice, conv.id, capability)
    assert len(resumed) == 4 * 4, detail
    assert resumed == read, detail
    assert {r.run_id for r in results} == {h.metadata["run_id"] for h in histories if h.metadata}, detail
