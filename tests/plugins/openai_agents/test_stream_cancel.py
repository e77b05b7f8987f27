"""A streamed run cancelled midway keeps what the SDK saved and is not recorded as completed.

After openai/openai-agents-python ``tests/test_cancel_streaming.py`` (``cancel(mode="immediate")``
and ``cancel(mode="after_turn")`` while events stream), with the items compared to the SDK's
own ``SQLiteSession`` on the same run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import Runner, SQLiteSession
from agents.memory import Session
from agents.testing import ModelStep, assistant_message, function_call
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import Conversation
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, add, make_agent


async def cancelled_after_its_tool(wiring: str, session: Session, mode: Any) -> None:
    """Stream a run that calls a tool, and cancel it once the tool's output is streamed."""
    answered = asyncio.Event()

    async def answer_once_cancelled(call: Any) -> list[Any]:
        await answered.wait()
        return [assistant_message("2")]

    steps = [[function_call("add", {"a": 1, "b": 1}, call_id="c1")], ModelStep.respond(answer_once_cancelled)]
    agent = make_agent("calc", NamedModel("m", steps), tools=[add])
    if wiring == "session.run_streamed":
        assert isinstance(session, ChatMemorySession)
        result = session.run_streamed(agent, "1+1?")
    else:
        result = Runner.run_streamed(agent, "1+1?", session=session)

    async def consume() -> None:
        async for event in result.stream_events():
            if getattr(event, "name", None) == "tool_output":
                result.cancel(mode=mode)
                answered.set()

    await asyncio.wait_for(consume(), timeout=10)


@pytest.mark.parametrize("mode", ["immediate", "after_turn"])
@pytest.mark.parametrize("wiring", ["run_streamed", "session.run_streamed"])
async def test_a_cancelled_stream_keeps_what_the_sdk_saved(
    wiring: str, mode: str, alice: Scope, conversation: Conversation
) -> None:
    baseline = SQLiteSession("baseline")
    await cancelled_after_its_tool("run_streamed", baseline, mode)
    session = ChatMemorySession(alice, conversation.id)
    await cancelled_after_its_tool(wiring, session, mode)

    assert await session.get_items() == await baseline.get_items()
    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert [m.role for m in run.messages or []] == ["user", "assistant", "tool"]
    # Without session.run nothing tells the session the run ended: the next run closes it.
    assert run.status == ("cancelled" if wiring == "session.run_streamed" else "running")
    if wiring == "session.run_streamed":
        assert (
            run.error
            == {
                "immediate": "CancelledError: the task running the agent was cancelled",
                "after_turn": "CancelledError: the run was cancelled after its turn",
            }[mode]
        )
