"""session.run_streamed: a run whose error the SDK raises from stream_events() (not from its run
loop task) is recorded as failed, as session.run records it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import GuardrailFunctionOutput, MaxTurnsExceeded, input_guardrail
from agents.testing import assistant_message, function_call
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import Conversation
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, add, make_agent


@input_guardrail
async def broken_guardrail(ctx: Any, agent: Any, input: Any) -> GuardrailFunctionOutput:
    await asyncio.sleep(0.2)
    raise RuntimeError("guardrail broke")


async def test_a_streamed_run_over_max_turns_is_failed(alice: Scope, conversation: Conversation) -> None:
    steps = [[function_call("add", {"a": 1, "b": 1}, call_id="c1")], [assistant_message("2")]]
    session = ChatMemorySession(alice, conversation.id)
    agent = make_agent("calc", NamedModel("m", steps), tools=[add])
    result = session.run_streamed(agent, "1+1?", max_turns=1)
    with pytest.raises(MaxTurnsExceeded):
        async for _ in result.stream_events():
            pass

    (run,) = (await alice.get_conversation(conversation.id)).histories
    assert (run.status, run.error) == ("failed", "MaxTurnsExceeded: Max turns (1) exceeded")


async def test_a_streamed_run_whose_input_guardrail_raises_is_failed(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    model = NamedModel("m", [[assistant_message("2")]])
    agent = make_agent("calc", model, input_guardrails=[broken_guardrail])
    result = session.run_streamed(agent, "1+1?")
    with pytest.raises(RuntimeError, match="guardrail broke"):
        async for _ in result.stream_events():
            pass

    (run,) = (await alice.get_conversation(conversation.id)).histories
    assert (run.status, run.error) == ("failed", "RuntimeError: guardrail broke")
