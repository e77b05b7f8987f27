"""A run that stops for tool approvals and is resumed from its ``RunState`` is one history.

Rewritten from openai/openai-agents-python ``tests/memory/test_session_context_wrapper.py``
(``test_resumed_run_persists_in_the_context_scope``) and ``tests/test_hitl_session_scenario.py``
(``test_memory_session_hitl_scenario``: approve, reject, and resume through a rehydrated
session), run against ``ChatMemorySession`` on both backends and compared with the SDK's own
``SQLiteSession``.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from agents import Agent, Runner, RunState, SQLiteSession, function_tool
from agents.testing import assistant_message, function_call
from chatmemory_openai_agents import ChatMemorySession
from chatmemory_openai_agents._record import UNCLOSED

from chatmemory import Conversation
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, make_agent
from tests.plugins.openai_agents.test_wirings import drive


def guarded() -> Agent[Any]:
    """An agent whose only tool needs approval: its first call stops the run."""

    async def delete_file(path: str) -> str:
        return f"deleted {path}"

    tool = function_tool(delete_file, needs_approval=True)
    call = function_call("delete_file", {"path": "a.txt"}, call_id="call-1")
    steps = [[call], [assistant_message("Done.")]]
    return make_agent("files", NamedModel("files-model", steps), tools=[tool])


async def stopped_for_approval(wiring: str, session: Any, agent: Agent[Any]) -> Any:
    first = await drive(wiring, session, agent, "Delete a.txt")
    assert [i.raw_item.call_id for i in first.interruptions] == ["call-1"]
    return first


async def expected_items(decision: str) -> list[Any]:
    baseline = SQLiteSession("baseline")
    agent = guarded()
    first = await Runner.run(agent, "Delete a.txt", session=baseline)
    state = first.to_state()
    getattr(state, decision)(first.interruptions[0])
    await Runner.run(agent, state, session=baseline)
    return await baseline.get_items()


@pytest.mark.parametrize("wiring", ["run", "run_sync", "run_streamed", "run+hooks", "session.run"])
async def test_a_run_resumed_after_approval_carries_on_in_its_history(
    wiring: str, alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id, model="session-model")
    agent = guarded()
    first = await stopped_for_approval(wiring, session, agent)
    (paused,) = (await alice.get_conversation(conversation.id)).histories
    assert paused.status == "running"

    state = first.to_state()
    state.approve(first.interruptions[0])
    resumed = await drive(wiring, session, agent, state)
    assert resumed.final_output == "Done."

    assert await session.get_items() == await expected_items("approve")
    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert (run.id, run.status, run.error) == (paused.id, "completed", None)
    assert [m.role for m in run.messages or []] == ["user", "assistant", "tool", "assistant"]
    if wiring in ("run+hooks", "session.run"):
        assert run.model == "files-model"
        assert run.usage is not None
        assert run.usage["requests"] == 2  # the resumed run's usage counts the paused part too


@pytest.mark.parametrize("decision", ["approve", "reject"])
@pytest.mark.parametrize("wiring", ["run", "session.run"])
async def test_a_run_resumed_by_another_process_carries_on_in_its_history(
    wiring: str, decision: str, alice: Scope, conversation: Conversation
) -> None:
    agent = guarded()
    first = await stopped_for_approval(wiring, ChatMemorySession(alice, conversation.id), agent)
    saved = first.to_state().to_json()
    del first
    gc.collect()  # nothing of the first process is left

    state = await RunState.from_json(agent, saved)
    getattr(state, decision)(state.get_interruptions()[0])
    session = ChatMemorySession(alice, conversation.id)
    await drive(wiring, session, agent, state)

    assert await session.get_items() == await expected_items(decision)
    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert (run.status, [m.role for m in run.messages or []]) == (
        "completed",
        ["user", "assistant", "tool", "assistant"],
    )


@pytest.mark.parametrize("wiring", ["run", "session.run"])
async def test_a_new_prompt_instead_of_an_approval_closes_the_paused_run(
    wiring: str, alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    await stopped_for_approval(wiring, session, guarded())
    answering = make_agent("files", NamedModel("files-model", [[assistant_message("Never mind.")]]))
    await drive(wiring, session, answering, "Forget it.")

    paused, later = (await alice.get_conversation(conversation.id)).histories
    assert (paused.status, paused.error, later.status) == ("failed", UNCLOSED, "completed")


def ends_on_its_tool(behavior: str) -> Agent[Any]:
    """An agent whose tool needs approval and whose tool output is the run's final output
    (``stop_on_first_tool`` or ``stop_at_tool_names``): the resumed run ends on that output."""

    async def delete_file(path: str) -> str:
        return f"deleted {path}"

    tool = function_tool(delete_file, needs_approval=True)
    steps = [[function_call("delete_file", {"path": "a.txt"}, call_id="call-1")]]
    stop: Any = "stop_on_first_tool" if behavior == "first" else {"stop_at_tool_names": ["delete_file"]}
    return make_agent("files", NamedModel("files-model", steps), tools=[tool], tool_use_behavior=stop)


_NO_HOOKS = pytest.mark.xfail(
    strict=True,
    reason="without hooks= the session never learns that a run ended on a tool output: the next "
    "run closes it failed, as any run not ending on an assistant answer",
)


@pytest.mark.parametrize("decision", ["approve", "reject"])
@pytest.mark.parametrize("behavior", ["first", "named"])
@pytest.mark.parametrize(
    "wiring",
    [
        "run+hooks",
        "run_streamed+hooks",
        "session.run",
        pytest.param("run", marks=_NO_HOOKS),
        pytest.param("run_streamed", marks=_NO_HOOKS),
    ],
)
async def test_a_run_resumed_into_a_final_tool_output_is_completed(
    wiring: str, behavior: str, decision: str, alice: Scope, conversation: Conversation
) -> None:
    """The resumed run's final output is the approved (or rejected) tool's output, which the SDK
    reports to ``on_agent_end`` before that run has saved anything: its history is closed
    ``completed`` with that output, as a run ending on an assistant answer is."""
    session = ChatMemorySession(alice, conversation.id)
    agent = ends_on_its_tool(behavior)
    first = await stopped_for_approval(wiring, session, agent)
    state = first.to_state()
    getattr(state, decision)(first.interruptions[0])
    resumed = await drive(wiring, session, agent, state)
    assert resumed.interruptions == []

    baseline = SQLiteSession("baseline")
    theirs = ends_on_its_tool(behavior)
    paused = await Runner.run(theirs, "Delete a.txt", session=baseline)
    state = paused.to_state()
    getattr(state, decision)(paused.interruptions[0])
    await Runner.run(theirs, state, session=baseline)
    assert await session.get_items() == await baseline.get_items()

    answering = make_agent("files", NamedModel("files-model", [[assistant_message("Anything else?")]]))
    await drive(wiring, session, answering, "Thanks.")
    run, later = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert (run.status, run.error, later.status) == ("completed", None, "completed")
    assert [m.role for m in run.messages or []] == ["user", "assistant", "tool"]
