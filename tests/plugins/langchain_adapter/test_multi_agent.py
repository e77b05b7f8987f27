"""A sub-agent invoked as a tool inside an outer agent's run, with and without its own middleware.

The outer agent records into a conversation with ``ChatMemoryMiddleware``; its tool invokes
another ``create_agent`` agent that records nothing, records into another conversation, or
records into the same one (with a middleware of its own, or the outer agent's very object).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any
from uuid import UUID

import pytest
from chatmemory_langchain import ChatMemoryMiddleware
from chatmemory_langchain._recorder import PENDING_RESULT
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolCallId, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState
from langgraph.types import Command

from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import FakeChat, call, fake
from tests.plugins.langchain_adapter._helpers import histories, rows, user

THREAD: RunnableConfig = {"configurable": {"thread_id": "t-1"}}


def _asking(sub: Any, sync: bool) -> BaseTool:
    if sync:

        @tool
        def ask(question: str) -> str:
            """Ask the sub-agent."""
            return str(sub.invoke(user(question))["messages"][-1].text)

        return ask

    @tool
    async def ask_async(question: str) -> str:
        """Ask the sub-agent."""
        return str((await sub.ainvoke(user(question)))["messages"][-1].text)

    return ask_async.model_copy(update={"name": "ask"})


def _wiring(
    chat: Scope,
    conversation: UUID,
    sub_middleware: list[ChatMemoryMiddleware] | None,
    *,
    sync: bool = False,
    checkpointer: bool = False,
) -> tuple[Any, FakeChat, FakeChat]:
    """The outer agent and both fakes; ``sub_middleware=None``: the sub-agent uses the outer's."""
    outer_middleware = ChatMemoryMiddleware(chat, conversation)
    sub_model = fake("five", "six", name="fake-sub")
    sub = create_agent(
        sub_model,
        [],
        system_prompt="Sub.",
        middleware=[outer_middleware] if sub_middleware is None else sub_middleware,
    )
    outer_model = fake(
        call("ask", "k1", question="2+3"),
        "It is five",
        call("ask", "k2", question="3+3"),
        "It is six",
        name="fake-outer",
    )
    outer = create_agent(
        outer_model,
        [_asking(sub, sync)],
        system_prompt="Outer.",
        middleware=[outer_middleware],
        checkpointer=InMemorySaver() if checkpointer else None,
    )
    return outer, outer_model, sub_model


async def _invoke(graph: Any, text: str, *, sync: bool) -> dict[str, Any]:
    if sync:
        return await asyncio.wait_for(asyncio.to_thread(graph.invoke, user(text), THREAD), 60)
    return await asyncio.wait_for(graph.ainvoke(user(text), THREAD), 60)


def _answered(messages: Sequence[BaseMessage]) -> bool:
    """Whether every tool call is followed by its results before any other message, as providers
    require."""
    waiting: set[str] = set()
    for message in messages:
        if isinstance(message, ToolMessage):
            waiting.discard(message.tool_call_id)
            continue
        if waiting:
            return False
        if isinstance(message, AIMessage):
            waiting = {c["id"] for c in message.tool_calls if c["id"]}
    return not waiting


OUTER_1 = [
    ("user", None, "hi"),
    ("assistant", "fake-outer", ""),
    ("tool", None, "five"),
    ("assistant", "fake-outer", "It is five"),
]
OUTER_2 = [
    ("user", None, "again"),
    ("assistant", "fake-outer", ""),
    ("tool", None, "six"),
    ("assistant", "fake-outer", "It is six"),
]


@pytest.mark.parametrize("checkpointer", [False, True], ids=["no-checkpointer", "checkpointer"])
@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
async def test_a_sub_agent_without_middleware_is_recorded_only_as_the_outer_runs_tool(
    sync: bool, checkpointer: bool, alice: Scope
) -> None:
    conv = await alice.start_conversation()
    outer, outer_model, sub_model = _wiring(alice, conv.id, [], sync=sync, checkpointer=checkpointer)
    assert (await _invoke(outer, "hi", sync=sync))["messages"][-1].text == "It is five"
    await _invoke(outer, "again", sync=sync)

    first, second = await histories(alice, conv.id)
    assert (rows(first.messages), rows(second.messages)) == (OUTER_1, OUTER_2)
    assert (first.status, second.status) == ("completed", "completed")
    assert [[m.type for m in seen] for seen in sub_model.seen] == [["system", "human"]] * 2
    assert _answered(outer_model.seen[2])


@pytest.mark.parametrize("checkpointer", [False, True], ids=["no-checkpointer", "checkpointer"])
async def test_a_sub_agent_recording_into_another_conversation(checkpointer: bool, alice: Scope) -> None:
    conv, other = await alice.start_conversation(), await alice.start_conversation()
    outer, _, sub_model = _wiring(
        alice, conv.id, [ChatMemoryMiddleware(alice, other.id)], checkpointer=checkpointer
    )
    await _invoke(outer, "hi", sync=False)
    await _invoke(outer, "again", sync=False)

    assert [rows(h.messages) for h in await histories(alice, conv.id)] == [OUTER_1, OUTER_2]
    sub_runs = await histories(alice, other.id)
    assert [rows(h.messages) for h in sub_runs] == [
        [("user", None, "2+3"), ("assistant", "fake-sub", "five")],
        [("user", None, "3+3"), ("assistant", "fake-sub", "six")],
    ]
    assert [(h.model, h.system_prompts, h.status) for h in sub_runs] == [
        ("fake-sub", ["Sub."], "completed")
    ] * 2
    # The sub-agent resumes its own conversation.
    assert [m.text for m in sub_model.seen[1][1:]] == ["2+3", "five", "3+3"]


@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
@pytest.mark.parametrize("shared", [False, True], ids=["own-middleware", "outer-middleware"])
async def test_a_sub_agent_recording_into_the_same_conversation_leaves_each_run_whole(
    shared: bool, sync: bool, alice: Scope
) -> None:
    conv = await alice.start_conversation()
    outer, outer_model, _ = _wiring(
        alice, conv.id, None if shared else [ChatMemoryMiddleware(alice, conv.id)], sync=sync
    )
    await _invoke(outer, "hi", sync=sync)

    outer_run, sub_run = await histories(alice, conv.id)
    assert rows(outer_run.messages) == OUTER_1
    assert [m.seq for m in outer_run.messages or []] == [1, 2, 5, 6]
    assert rows(sub_run.messages) == [("user", None, "2+3"), ("assistant", "fake-sub", "five")]
    assert (outer_run.status, sub_run.status) == ("completed", "completed")

    # The next run resumes each run whole, the outer one first: its tool call is followed by
    # its result, not by the sub-agent's messages recorded in between.
    await _invoke(outer, "again", sync=sync)
    resumed = outer_model.seen[2]
    assert _answered(resumed)
    assert [m.text for m in resumed[1:]] == ["hi", "", "five", "It is five", "2+3", "five", "again"]
    assert [rows(h.messages) for h in await histories(alice, conv.id)][2] == OUTER_2
    # A new middleware reads the whole conversation the same way.
    fresh = fake("ok")
    await create_agent(fresh, [], middleware=[ChatMemoryMiddleware(alice, conv.id)]).ainvoke(user("total?"))
    assert _answered(fresh.seen[0])
    assert [m.text for m in fresh.seen[0][:7]] == [m.text for m in resumed[1:]]
    assert [m.text for m in fresh.seen[0][7:]] == ["", "six", "It is six", "3+3", "six", "total?"]


async def test_a_sub_agent_on_the_same_conversation_sees_the_outer_call_closed_in_its_view_only(
    alice: Scope,
) -> None:
    # Mid-run, the conversation ends on the outer run's tool call, whose result this very
    # sub-agent is producing: the sub-agent's model gets that call closed, and nothing of the
    # closing is stored.
    conv = await alice.start_conversation()
    outer, _, sub_model = _wiring(alice, conv.id, [ChatMemoryMiddleware(alice, conv.id)])
    await _invoke(outer, "hi", sync=False)

    seen = sub_model.seen[0]
    assert _answered(seen)
    assert [m.type for m in seen] == ["system", "human", "ai", "tool", "human"]
    closing = seen[3]
    assert isinstance(closing, ToolMessage)
    assert (closing.tool_call_id, closing.status) == ("k1", "error")
    assert closing.text == PENDING_RESULT
    transcript = await alice.transcript(conv.id)
    assert [m.content for m in transcript] == ["hi", "", "2+3", "five", "five", "It is five"]


async def test_a_sub_agent_on_the_same_conversation_without_autoload_sees_only_its_input(
    alice: Scope,
) -> None:
    conv = await alice.start_conversation()
    outer, outer_model, sub_model = _wiring(
        alice, conv.id, [ChatMemoryMiddleware(alice, conv.id, autoload=False)]
    )
    await _invoke(outer, "hi", sync=False)
    await _invoke(outer, "again", sync=False)

    assert [[m.text for m in seen] for seen in sub_model.seen] == [["Sub.", "2+3"], ["Sub.", "3+3"]]
    assert _answered(outer_model.seen[2])
    assert [rows(h.messages) for h in await histories(alice, conv.id)][::2] == [OUTER_1, OUTER_2]


@tool
def transfer_to_b(
    tool_call_id: Annotated[str, InjectedToolCallId], state: Annotated[Any, InjectedState]
) -> Command:
    """Hand the conversation over to agent b."""
    done = ToolMessage("Transferred to b", tool_call_id=tool_call_id, name="transfer_to_b")
    return Command(goto="b", graph=Command.PARENT, update={"messages": [*state["messages"], done]})


async def test_an_agent_handing_off_to_another_ends_its_run_completed(alice: Scope) -> None:
    """A handoff (a tool's ``Command(goto=..., graph=Command.PARENT)``, the swarm and supervisor
    pattern) ends the agent's run: its ``after_agent`` never runs, and its history was left
    ``running`` for good."""
    conv = await alice.start_conversation()
    a = create_agent(
        fake(call("transfer_to_b", "h1"), name="model-a"),
        [transfer_to_b],
        middleware=[ChatMemoryMiddleware(alice, conv.id)],
        name="a",
    )
    b = create_agent(
        fake("B here.", name="model-b"), [], middleware=[ChatMemoryMiddleware(alice, conv.id)], name="b"
    )
    parent = StateGraph(MessagesState)
    parent.add_node("a", a, destinations=("b",))
    parent.add_node("b", b)
    parent.add_edge(START, "a")
    out = await parent.compile().ainvoke(user("help"))

    handing, taking = await histories(alice, conv.id)
    assert (handing.model, handing.status, taking.model, taking.status) == (
        "model-a",
        "completed",
        "model-b",
        "completed",
    )
    assert [m.content for m in handing.messages or []] == ["help", "", "Transferred to b"]
    assert [m.content for m in await alice.transcript(conv.id)] == [m.text for m in out["messages"]]
