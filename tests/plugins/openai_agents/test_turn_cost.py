"""Transactions per turn: a read, the input with the history's start, the answer with its finish.

The SDK's ``SQLiteSession`` makes three per turn too (read, save the input, save the output).
With ``hooks=session.hooks`` on ``Runner.run`` the session learns the agent only at the first
model call, after the input is saved, so naming the run's model and instructions takes one more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from agents import Agent, GuardrailFunctionOutput, OutputGuardrailTripwireTriggered, Runner, output_guardrail
from agents.testing import assistant_message
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import ChatMemory, Conversation
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, make_agent
from tests.transactions import counted

Turn = Callable[[ChatMemorySession, Agent[Any], str], Awaitable[Any]]


async def _runner(session: ChatMemorySession, agent: Agent[Any], text: str) -> Any:
    return await Runner.run(agent, text, session=session)


async def _hooked(session: ChatMemorySession, agent: Agent[Any], text: str) -> Any:
    return await Runner.run(agent, text, session=session, hooks=session.hooks)


async def _session_run(session: ChatMemorySession, agent: Agent[Any], text: str) -> Any:
    return await session.run(agent, text)


THREE = ["read", "write", "write"]


@pytest.mark.parametrize(
    ("turn", "expected"),
    [
        (_runner, THREE),
        (_session_run, THREE),
        (_hooked, ["read", "write", "write", "write"]),
    ],
    ids=["Runner.run", "session.run", "hooks"],
)
async def test_transactions_per_turn(
    memory: ChatMemory, alice: Scope, conversation: Conversation, turn: Turn, expected: list[str]
) -> None:
    model = NamedModel("gpt-test", [[assistant_message(f"answer {i}")] for i in range(3)])
    agent = make_agent("a", model)
    session = ChatMemorySession(alice, conversation.id, model="gpt-test")
    await turn(session, agent, "first")
    for text in ("second", "third"):
        with counted(memory) as transactions:
            await turn(session, agent, text)
        assert transactions == expected
    histories = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert [(h.status, h.model, len(h.messages or ())) for h in histories] == [
        ("completed", "gpt-test", 2)
    ] * 3
    assert [m.content for m in histories[-1].messages or ()] == ["third", "answer 2"]
    assert histories[-1].usage is not None and histories[-1].usage["requests"] == 1


async def test_a_tripped_output_guardrail_still_fails_a_session_run(
    alice: Scope, conversation: Conversation
) -> None:
    """``session.run`` records how its run ended: an output guardrail that trips after the final
    output was saved leaves the history ``failed``, not ``completed``."""

    @output_guardrail
    async def refuse(context: Any, agent: Agent[Any], output: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=True)

    model = NamedModel("gpt-test", [[assistant_message("no")]])
    agent = make_agent("a", model, output_guardrails=[refuse])
    session = ChatMemorySession(alice, conversation.id)
    with pytest.raises(OutputGuardrailTripwireTriggered):
        await session.run(agent, "hi")
    (history,) = (await alice.get_conversation(conversation.id)).histories
    assert history.status == "failed"
    assert history.error is not None and "OutputGuardrailTripwireTriggered" in history.error
