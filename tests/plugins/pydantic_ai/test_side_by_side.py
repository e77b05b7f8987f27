"""Two runs of one agent-level capability recorded side by side, the second starting while the
first is midway: what the second resumes from, and what each records.

The second run reads the first run's messages stored so far; pydantic-ai merges the request that
ends them (the results of its tools, or the returns a repair gives its calls still running) with
the second run's prompt. Each run must still be recorded whole, and a later run must resume
from what a fresh read gives.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from chatmemory_pydantic_ai import ChatMemoryCapability

from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import Script, adder, resumed_and_read

WHOLE = ["user", "assistant", "tool", "assistant"]


class Gate:
    """Holds the first caller (a tool or a model, on a worker thread) until opened; at most
    ten seconds, so a test that never opens it does not hang."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()
        self._guard = threading.Lock()

    def __call__(self) -> None:
        with self._guard:
            first = not self.reached.is_set()
            self.reached.set()
        if first:
            self.opened.wait(timeout=10)

    async def wait_reached(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, 10)


async def recorded(chat: Scope, conversation_id: Any) -> list[tuple[str, str, list[str]]]:
    histories = (await chat.get_conversation(conversation_id, messages=True)).histories
    return [(h.messages[0].content, h.status, [m.role for m in h.messages]) for h in histories if h.messages]


@pytest.mark.parametrize("held", ["in its tool", "before its answer"])
async def test_a_run_starting_while_another_is_midway_resumes_from_it_and_both_are_recorded_whole(
    alice: Scope, held: str
) -> None:
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    gate = Gate()
    script = Script("fn-A", before_answer=gate if held == "before its answer" else None)
    agent = adder(script.model, in_tool=gate if held == "in its tool" else None, capabilities=[capability])
    first = asyncio.ensure_future(agent.run("sum 0"))
    try:
        await gate.wait_reached()
        await asyncio.wait_for(agent.run("sum 1"), timeout=30)
    finally:
        gate.opened.set()
    await asyncio.wait_for(first, timeout=30)

    # The second run was sent the first one's prompt and tool call, the call answered (by its
    # result, or closed while it still ran), then its own prompt, on which it called the tool.
    seen = script.received[1]
    assert [[p.part_kind for p in m.parts] for m in seen] == [
        ["system-prompt", "user-prompt"],
        ["tool-call"],
        ["tool-return", "user-prompt"],
    ]
    assert seen[-1].parts[-1].content == "sum 1"
    assert await recorded(alice, conv.id) == [("sum 0", "completed", WHOLE), ("sum 1", "completed", WHOLE)]
    resumed, read = await resumed_and_read(alice, conv.id, capability)
    assert len(resumed) == 8
    assert resumed == read


async def test_a_run_ending_between_a_loads_read_of_its_messages_and_of_its_history_is_resumed_whole(
    alice: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    gate = Gate()
    script = Script("fn-A")
    agent = adder(script.model, in_tool=gate, capabilities=[capability])
    first = asyncio.ensure_future(agent.run("sum 0"))
    get_history = alice.get_history

    async def once_the_first_run_ended(*args: Any, **kwargs: Any) -> Any:
        gate.opened.set()
        await asyncio.wait_for(asyncio.shield(first), timeout=10)
        return await get_history(*args, **kwargs)

    try:
        await gate.wait_reached()
        # The second run reads the first one's prompt and tool call, then that run ends
        # (completed) before the second reads its history.
        monkeypatch.setattr(alice, "get_history", once_the_first_run_ended)
        await asyncio.wait_for(agent.run("sum 1"), timeout=30)
    finally:
        gate.opened.set()
    await asyncio.wait_for(first, timeout=30)

    seen = script.received[-2]  # the second run's first request: the first run whole, then its prompt
    assert [[p.part_kind for p in m.parts] for m in seen] == [
        ["system-prompt", "user-prompt"],
        ["tool-call"],
        ["tool-return"],
        ["text"],
        ["user-prompt"],
    ]
    assert await recorded(alice, conv.id) == [("sum 0", "completed", WHOLE), ("sum 1", "completed", WHOLE)]
    resumed, read = await resumed_and_read(alice, conv.id, capability)
    assert resumed == read
