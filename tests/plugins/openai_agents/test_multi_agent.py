"""Multi-agent wirings: handoffs in one run, agents called as tools, sub-agents with sessions.

What each session holds is compared with the SDK's own ``SQLiteSession`` driven the same way.
``test_nested_handoff_history_filters_model_input_but_keeps_every_item`` is rewritten from the
SDK's ``tests/test_agent_runner.py``
(``test_nested_handoff_filters_model_input_but_preserves_session_items``), and the sub-agent
wirings follow what ``Agent.as_tool(session=..., hooks=...)`` passes to the nested run
(``tests/test_agent_as_tool.py``), run against ``ChatMemorySession`` on both backends.
"""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, RunConfig, Runner, SQLiteSession
from agents.testing import assistant_message, function_call
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import Conversation
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, add, make_agent
from tests.plugins.openai_agents.test_wirings import WIRINGS, drive


def triage_to_calc() -> Agent[Any]:
    calc = make_agent(
        "calc",
        NamedModel(
            "model-calc", [[function_call("add", {"a": 2, "b": 3}, call_id="c2")], [assistant_message("5")]]
        ),
        "You add.",
        tools=[add],
    )
    # Both agents answer with the scripted model's default item id: the producer of each
    # message must not be told apart by item ids alone.
    return make_agent(
        "triage",
        NamedModel(
            "model-triage",
            [[assistant_message("Routing."), function_call("transfer_to_calc", {}, call_id="c1")]],
        ),
        "Route to calc.",
        handoffs=[calc],
    )


def boss_with(sub: Agent[Any], **as_tool: Any) -> Agent[Any]:
    tool = sub.as_tool("ask_calc", "Ask calc.", **as_tool)
    return make_agent(
        "boss",
        NamedModel(
            "model-boss",
            [
                [function_call("ask_calc", {"input": "2+3"}, call_id="t1")],
                [assistant_message("It is 5", item_id="mb")],
            ],
        ),
        "Delegate.",
        tools=[tool],
    )


def calc_agent() -> Agent[Any]:
    return make_agent("calc", NamedModel("model-calc", [[assistant_message("5", item_id="mc")]]), "You add.")


async def baseline_of(wiring: str, agent: Agent[Any], session: SQLiteSession | None = None) -> SQLiteSession:
    base = session or SQLiteSession("baseline")
    streamed = wiring.startswith("run_streamed")
    if streamed:
        result = Runner.run_streamed(agent, "2+3?", session=base)
        async for _ in result.stream_events():
            pass
    else:
        await Runner.run(agent, "2+3?", session=base)
    return base


@pytest.mark.parametrize("wiring", WIRINGS)
async def test_a_handoff_stores_what_the_sdk_stores_with_the_model_of_each_agent(
    wiring: str, alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id, model="session-default")
    result = await drive(wiring, session, triage_to_calc(), "2+3?")
    assert result.final_output == "5"
    baseline = await baseline_of(wiring, triage_to_calc())
    assert await session.get_items() == await baseline.get_items()
    assert await ChatMemorySession(alice, conversation.id).get_items() == await baseline.get_items()

    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert run.status == "completed"
    roles = [m.role for m in run.messages or []]
    assert roles == ["user", "assistant", "assistant", "tool", "assistant", "tool", "assistant"]
    if "hooks" in wiring or wiring == "session.run":
        assert (run.model, run.system_prompts) == ("model-triage", ["Route to calc."])
        assistant = [
            (m.model, (m.metadata or {}).get("agent")) for m in run.messages or [] if m.role == "assistant"
        ]
        assert assistant == [("model-triage", "triage")] * 2 + [("model-calc", "calc")] * 2
    else:
        assert {m.model for m in run.messages or [] if m.role == "assistant"} == {"session-default"}


async def test_nested_handoff_history_filters_model_input_but_keeps_every_item(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    config = RunConfig(nest_handoff_history=True)
    result = await session.run(triage_to_calc(), "2+3?", run_config=config)
    assert result.final_output == "5"
    baseline = SQLiteSession("baseline")
    await Runner.run(triage_to_calc(), "2+3?", session=baseline, run_config=config)
    items = await session.get_items()
    assert items == await baseline.get_items()
    assert [i.get("call_id") for i in items if i.get("type") == "function_call_output"] == ["c1", "c2"]


@pytest.mark.parametrize("wiring", WIRINGS)
async def test_an_agent_called_as_a_tool_without_a_session_is_part_of_the_outer_run_only(
    wiring: str, alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    result = await drive(wiring, session, boss_with(calc_agent()), "2+3?")
    assert result.final_output == "It is 5"
    baseline = await baseline_of(wiring, boss_with(calc_agent()))
    assert await session.get_items() == await baseline.get_items()

    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert run.status == "completed"
    assert [(m.role, m.content) for m in run.messages or []] == [
        ("user", "2+3?"),
        ("assistant", ""),
        ("tool", "5"),
        ("assistant", "It is 5"),
    ]
    if "hooks" in wiring or wiring == "session.run":
        assert run.model == "model-boss"
        assert {m.model for m in run.messages or [] if m.role == "assistant"} == {"model-boss"}


async def _ignore(event: Any) -> None:
    pass


@pytest.mark.parametrize("sub_streamed", [False, True], ids=["sub-run", "sub-streamed"])
@pytest.mark.parametrize("sub_hooks", [False, True])
@pytest.mark.parametrize("wiring", ["session.run", "run+hooks", "run_streamed+hooks", "run"])
async def test_a_sub_agent_with_its_own_session_on_another_conversation(
    wiring: str, sub_hooks: bool, sub_streamed: bool, alice: Scope, conversation: Conversation
) -> None:
    other = await alice.start_conversation(title="calc")
    sub = ChatMemorySession(alice, other.id)
    session = ChatMemorySession(alice, conversation.id)
    extra: dict[str, Any] = {"hooks": sub.hooks} if sub_hooks else {}
    if sub_streamed:
        extra["on_stream"] = _ignore  # the SDK then runs the sub-agent streamed
    await drive(wiring, session, boss_with(calc_agent(), session=sub, **extra), "2+3?")

    base_sub = SQLiteSession("sub")
    baseline = await baseline_of(wiring, boss_with(calc_agent(), session=base_sub))
    assert await session.get_items() == await baseline.get_items()
    assert await sub.get_items() == await base_sub.get_items()

    (outer,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    (inner,) = (await alice.get_conversation(other.id, messages=True)).histories
    assert (outer.status, inner.status) == ("completed", "completed")
    assert [m.content for m in outer.messages or []] == ["2+3?", "", "5", "It is 5"]
    assert [(m.role, m.content) for m in inner.messages or []] == [("user", "2+3"), ("assistant", "5")]
    # The SDK counts the sub-agent's request in the outer run's usage; the sub-agent's history
    # counts its own only, not the outer run's requests before it.
    assert (outer.usage or {})["requests"] == 3
    assert (inner.usage or {})["requests"] == 1
    if sub_hooks:
        assert inner.model == "model-calc"
        assert [m.model for m in inner.messages or []] == [None, "model-calc"]


@pytest.mark.parametrize("same_object", [True, False], ids=["same-session", "same-conversation"])
@pytest.mark.parametrize("sub_hooks", [True, False])
@pytest.mark.parametrize("wiring", ["session.run", "run+hooks", "run_streamed+hooks", "run"])
async def test_a_sub_agent_on_the_same_session_leaves_the_outer_run_whole(
    wiring: str, sub_hooks: bool, same_object: bool, alice: Scope, conversation: Conversation
) -> None:
    # The sub-agent's run shares the outer run's usage object (the SDK counts its requests in
    # the outer run): its end must not be taken for the outer run's.
    session = ChatMemorySession(alice, conversation.id, model="session-default")
    sub = session if same_object else ChatMemorySession(alice, conversation.id, model="session-default")
    extra = {"hooks": sub.hooks} if sub_hooks else {}
    await drive(wiring, session, boss_with(calc_agent(), session=sub, **extra), "2+3?")

    baseline = SQLiteSession("baseline")
    await baseline_of(wiring, boss_with(calc_agent(), session=baseline), baseline)
    assert await session.get_items() == await baseline.get_items()

    outer, inner = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert [(m.seq, m.content) for m in outer.messages or []] == [
        (1, "2+3?"),
        (4, ""),
        (5, "5"),
        (6, "It is 5"),
    ]
    sub_model = "model-calc" if sub_hooks else "session-default"
    assert [(m.seq, m.model) for m in inner.messages or []] == [(2, None), (3, sub_model)]
    assert (inner.model, inner.status) == (sub_model, "completed")
    assert (inner.usage or {})["requests"] == 1
    assert outer.status == "completed"
    if wiring != "run":
        assert outer.model == "model-boss"


async def test_sub_agents_called_in_parallel_on_the_same_session_each_record_their_own_run(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)

    def boss() -> Agent[Any]:
        calc = make_agent(
            "calc",
            NamedModel(
                "model-calc", [[assistant_message("5", item_id="x1")], [assistant_message("6", item_id="x2")]]
            ),
            "You add.",
        )
        tool = calc.as_tool("ask_calc", "Ask calc.", session=session, hooks=session.hooks)
        calls = [
            function_call("ask_calc", {"input": "2+3"}, call_id="t1"),
            function_call("ask_calc", {"input": "3+3"}, call_id="t2"),
        ]
        script = NamedModel("model-boss", [calls, [assistant_message("done", item_id="mb")]])
        return make_agent("boss", script, "Delegate.", tools=[tool])

    await session.run(boss(), "go")

    outer, *inner = (await alice.get_conversation(conversation.id, messages=True)).histories
    # The calc model answers in the order the two sub-agents reach it, which the event loop
    # decides: "5" may go to either. Each call's output must be the answer its own run recorded.
    answers = dict(tuple(m.content for m in h.messages or []) for h in inner)
    assert sorted(answers.items()) in (
        [("2+3", "5"), ("3+3", "6")],
        [("2+3", "6"), ("3+3", "5")],
    )
    assert [(m.role, m.content) for m in outer.messages or []] == [
        ("user", "go"),
        ("assistant", ""),
        ("assistant", ""),
        ("tool", answers["2+3"]),
        ("tool", answers["3+3"]),
        ("assistant", "done"),
    ]
    assert [(h.model, h.status) for h in inner] == [("model-calc", "completed")] * 2
    # Both count on the outer run's usage at the same time: each history counts its own request.
    assert [(h.usage or {})["requests"] for h in inner] == [1, 1]
    assert (outer.usage or {})["requests"] == 4
