"""ChatMemoryMiddleware next to a LangGraph checkpointer: nothing loaded or recorded twice.

The review test drives LangChain's ``HumanInTheLoopMiddleware`` the way
langchain-ai/langchain ``libs/langchain_v1/tests/unit_tests/agents/middleware/implementations/
test_human_in_the_loop.py`` does (an interrupt, then ``Command(resume={"decisions": [...]})``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from langchain.agents.middleware import AgentMiddleware, HumanInTheLoopMiddleware, PIIMiddleware
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, interrupt

from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import add, call, fake
from tests.plugins.langchain_adapter._helpers import agent, histories, rows, user


def without_ids(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    return [m.model_copy(update={"id": None}) for m in messages]


async def test_a_checkpointer_thread_is_neither_loaded_nor_recorded_twice(alice: Scope) -> None:
    conv = await alice.start_conversation()
    model = fake(call("add", "c1", a=1, b=2), "3", "6")
    graph = agent(alice, conv.id, model, checkpointer=InMemorySaver())
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}
    await graph.ainvoke(user("1+2?"), thread)
    await graph.ainvoke(user("And 3+3?"), thread)

    assert [m.type for m in model.seen[2]] == ["system", "human", "ai", "tool", "ai", "human"]
    first_run, second_run = await histories(alice, conv.id)
    assert [m.role for m in first_run.messages or []] == ["user", "assistant", "tool", "assistant"]
    assert rows(second_run.messages) == [("user", None, "And 3+3?"), ("assistant", "fake-a", "6")]
    assert second_run.metadata == {
        "framework": "langchain",
        "thread_id": "t-1",
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    transcript = await alice.transcript(conv.id)
    assert len({m.key for m in transcript}) == len(transcript) == 6


async def test_a_history_deleted_from_the_store_is_not_recorded_again_by_the_threads_next_run(
    alice: Scope,
) -> None:
    """The thread still holds the deleted run's messages; an agent built per request (a new
    middleware, which reads the conversation whole) recorded them again, after the later
    runs, in the next run's history."""
    conv = await alice.start_conversation()
    saver, model = InMemorySaver(), fake("a1", "a2", "a3")
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}
    await agent(alice, conv.id, model, checkpointer=saver).ainvoke(user("secret q1"), thread)
    await agent(alice, conv.id, model, checkpointer=saver).ainvoke(user("q2"), thread)
    first, _ = await histories(alice, conv.id)
    await alice.delete_history(first.id)

    out = await agent(alice, conv.id, model, checkpointer=saver).ainvoke(user("q3"), thread)

    assert [m.text for m in out["messages"]] == ["secret q1", "a1", "q2", "a2", "q3", "a3"]
    second, third = await histories(alice, conv.id)
    assert (rows(second.messages), rows(third.messages)) == (
        [("user", None, "q2"), ("assistant", "fake-a", "a2")],
        [("user", None, "q3"), ("assistant", "fake-a", "a3")],
    )


async def test_a_new_thread_resumes_the_conversation_like_the_checkpointer_would(alice: Scope) -> None:
    conv = await alice.start_conversation()
    kept = fake(call("add", "c1", a=1, b=2), "3", "6")
    graph = agent(alice, conv.id, kept, checkpointer=InMemorySaver())
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}
    await graph.ainvoke(user("1+2?"), thread)
    await graph.ainvoke(user("And 3+3?"), thread)

    elsewhere = await alice.start_conversation()
    await agent(alice, elsewhere.id, fake(call("add", "c1", a=1, b=2), "3")).ainvoke(user("1+2?"))
    resumed = fake("6")
    fresh_thread: RunnableConfig = {"configurable": {"thread_id": "t-2"}}
    await agent(alice, elsewhere.id, resumed, checkpointer=InMemorySaver()).ainvoke(
        user("And 3+3?"), fresh_thread
    )

    assert without_ids(resumed.seen[0]) == without_ids(kept.seen[2])


@tool
def confirm(action: str) -> str:
    """Asks a human before acting."""
    answer = interrupt(f"Allow {action}?")
    return f"{action}: {answer}"


async def test_an_interrupt_is_not_a_failure_and_the_resumed_run_completes_its_history(alice: Scope) -> None:
    conv = await alice.start_conversation()
    graph = agent(
        alice,
        conv.id,
        fake(call("confirm", "c1", action="deploy"), "Deployed."),
        tools=[confirm],
        checkpointer=InMemorySaver(),
    )
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}
    paused = await graph.ainvoke(user("Deploy it"), thread)
    assert "__interrupt__" in paused
    (run,) = await histories(alice, conv.id)
    assert (run.status, [m.role for m in run.messages or []]) == ("running", ["user", "assistant"])

    await graph.ainvoke(Command(resume="yes"), thread)
    (run,) = await histories(alice, conv.id)
    assert run.status == "completed"
    assert rows(run.messages)[2:] == [("tool", None, "deploy: yes"), ("assistant", "fake-a", "Deployed.")]


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_reviewed_tool_call_is_one_run_and_a_new_thread_resumes_after_it(
    alice: Scope, decision: str
) -> None:
    conv = await alice.start_conversation()
    review = HumanInTheLoopMiddleware(interrupt_on={"add": True})
    graph = agent(
        alice,
        conv.id,
        fake(call("add", "c1", a=1, b=2), "Done."),
        before=[review],
        tools=[add],
        checkpointer=InMemorySaver(),
    )
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}
    assert "__interrupt__" in await graph.ainvoke(user("1+2?"), thread)
    await graph.ainvoke(Command(resume={"decisions": [{"type": decision}]}), thread)

    (run,) = await histories(alice, conv.id)
    assert run.status == "completed"
    assert [m.role for m in run.messages or []] == ["user", "assistant", "tool", "assistant"]
    tool_result = (run.messages or [])[2]
    assert (tool_result.content == "3") is (decision == "approve")

    later = fake("Anything else?", name="fake-b")
    await agent(alice, conv.id, later, tools=[add]).ainvoke(user("Thanks"))
    assert [m.type for m in later.seen[0]] == ["system", "human", "ai", "tool", "ai", "human"]


@pytest.mark.parametrize("recorded_by", ["this process", "another live process", "a process that has exited"])
async def test_an_interrupt_resumed_through_another_agent_object_continues_the_same_history(
    alice: Scope, recorded_by: str
) -> None:
    conv = await alice.start_conversation()
    saver = InMemorySaver()
    asking, done = call("confirm", "c1", action="deploy"), AIMessage("Deployed.")
    asking.usage_metadata = {"input_tokens": 10, "output_tokens": 1, "total_tokens": 11}
    done.usage_metadata = {"input_tokens": 100, "output_tokens": 1, "total_tokens": 101}
    model = fake(asking, done, "Anything else?")
    # A server building its agent per request: the resume reaches a new middleware object.
    first_request = agent(alice, conv.id, model, tools=[confirm], checkpointer=saver)
    second_request = agent(alice, conv.id, model, tools=[confirm], checkpointer=saver)
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}
    assert "__interrupt__" in await first_request.ainvoke(user("Deploy it"), thread)
    (paused,) = await histories(alice, conv.id)
    if recorded_by == "another live process":
        await alice.update_history(paused.id, metadata={**paused.metadata, "pid": os.getppid()})
    if recorded_by == "a process that has exited":
        # Paused for a human, whose answer reaches a new process: not a run left behind.
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        await alice.update_history(paused.id, metadata={**paused.metadata, "pid": int(gone.stdout)})
    await second_request.ainvoke(Command(resume="yes"), thread)

    (run,) = await histories(alice, conv.id)
    assert (run.id, run.status) == (paused.id, "completed")
    assert [m.role for m in run.messages or []] == ["user", "assistant", "tool", "assistant"]
    assert run.metadata["pid"] == os.getpid()
    # The calls before the pause count too.
    assert run.usage == {"input_tokens": 110, "output_tokens": 2, "total_tokens": 112}
    # The object that paused the run takes the thread's next input without closing it again.
    await first_request.ainvoke(user("Thanks"), thread)
    assert [(h.status, h.error) for h in await histories(alice, conv.id)] == [
        ("completed", None),
        ("completed", None),
    ]


async def test_an_interrupt_resumed_elsewhere_after_a_sub_agent_ran_continues_the_outer_history(
    alice: Scope,
) -> None:
    """The paused run called a sub-agent recording into the same conversation under the same
    thread (LangGraph hands the tool its configuration): the resume through another agent object
    continues the paused history, not the sub-agent's newer, finished one. The run was split in
    two, its paused history left running."""
    conv = await alice.start_conversation()

    @tool
    async def delegate(task: str) -> str:
        """Ask the helper agent."""
        helper = agent(alice, conv.id, fake("helper says 42", name="helper-model"), tools=[])
        return str((await helper.ainvoke(user(task)))["messages"][-1].text)

    saver = InMemorySaver()
    model = fake(call("delegate", "d1", task="compute"), call("confirm", "c1", action="deploy"), "Deployed.")
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}
    first = agent(alice, conv.id, model, tools=[delegate, confirm], checkpointer=saver)
    assert "__interrupt__" in await first.ainvoke(user("go"), thread)
    second = agent(alice, conv.id, model, tools=[delegate, confirm], checkpointer=saver)
    await second.ainvoke(Command(resume="yes"), thread)

    outer, helper = await histories(alice, conv.id)
    assert (outer.status, helper.status, helper.model) == ("completed", "completed", "helper-model")
    assert [m.content for m in outer.messages or []][-3:] == ["", "deploy: yes", "Deployed."]


class ConfirmFirst(AgentMiddleware[Any, Any, Any]):
    """Asks a human before the model sees a request to deploy; fails after a model call that
    answers "boom" (an error no hook of the recording middleware sees)."""

    def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        last = state["messages"][-1]
        if last.type == "human" and last.text.startswith("deploy"):
            return {"messages": [HumanMessage(f"(confirmed: {interrupt('Deploy?')})")]}
        return None

    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        if state["messages"][-1].text == "boom":
            raise RuntimeError("after the model")
        return None


async def test_a_run_paused_before_its_first_model_call_and_resumed_elsewhere_gets_a_history_of_its_own(
    alice: Scope,
) -> None:
    """An older run of the thread was left running (an error outside the middleware's hooks);
    a later run pauses before any model call, so no history holds it yet, and is resumed
    through another agent object: it is recorded as a history of its own. It was appended to
    the old run's history, which was then closed completed."""
    conv = await alice.start_conversation()
    saver = InMemorySaver()
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}

    def build(*replies: str) -> Any:
        return agent(alice, conv.id, fake(*replies), tools=[add], checkpointer=saver, after=[ConfirmFirst()])

    with pytest.raises(RuntimeError, match="after the model"):
        await build("boom").ainvoke(user("q1"), thread)
    await build("second answer").ainvoke(user("q2"), thread)
    assert "__interrupt__" in await build().ainvoke(user("deploy it"), thread)
    await build("deployed").ainvoke(Command(resume="yes"), thread)

    left, second, third = await histories(alice, conv.id)
    assert second.status == "completed"
    assert (left.status, [m.content for m in left.messages or []]) == ("running", ["q1", "boom"])
    assert (third.status, [m.content for m in third.messages or []]) == (
        "completed",
        ["deploy it", "(confirmed: yes)", "deployed"],
    )


async def test_a_run_paused_before_its_first_model_call_right_after_one_left_running_gets_its_own_history(
    alice: Scope,
) -> None:
    """As above with no run between: the state's newest stored message is the run left
    running's, and the resumed run took that history (and closed it completed with its own
    messages)."""
    conv = await alice.start_conversation()
    saver = InMemorySaver()
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}

    def build(*replies: str, name: str = "fake-a") -> Any:
        model = fake(*replies, name=name)
        return agent(alice, conv.id, model, tools=[add], checkpointer=saver, after=[ConfirmFirst()])

    with pytest.raises(RuntimeError, match="after the model"):
        await build("boom").ainvoke(user("q1"), thread)
    assert "__interrupt__" in await build().ainvoke(user("deploy it"), thread)
    await build("deployed", name="fake-b").ainvoke(Command(resume="yes"), thread)

    left, resumed = await histories(alice, conv.id)
    assert (left.status, [m.content for m in left.messages or []]) == ("running", ["q1", "boom"])
    assert (resumed.status, resumed.model, [m.content for m in resumed.messages or []]) == (
        "completed",
        "fake-b",
        ["deploy it", "(confirmed: yes)", "deployed"],
    )


async def test_a_thread_holding_only_its_stored_input_is_given_no_other_thread(alice: Scope) -> None:
    """Thread B's first turn failed at the provider, so it holds only its stored input; thread A
    then recorded a turn in the same conversation. B's next turn holds the conversation (its
    stored input comes before its new one): nothing is loaded. A's turn was loaded into B's
    state for good, as if B's own stored input were a turn sent again."""
    conv = await alice.start_conversation()
    saver = InMemorySaver()
    thread_a: RunnableConfig = {"configurable": {"thread_id": "A"}}
    thread_b: RunnableConfig = {"configurable": {"thread_id": "B"}}
    with pytest.raises(RuntimeError, match="provider down"):
        await agent(alice, conv.id, fake(RuntimeError("provider down")), checkpointer=saver).ainvoke(
            user("b1"), thread_b
        )
    answering_a = agent(alice, conv.id, fake("answer for A"), checkpointer=saver)
    await answering_a.ainvoke(user("secret of A"), thread_a)

    model = fake("answer for B")
    out = await agent(alice, conv.id, model, checkpointer=saver).ainvoke(user("b2"), thread_b)

    assert [m.text for m in model.seen[0][1:]] == ["b1", "b2"]
    assert [m.text for m in out["messages"]] == ["b1", "b2", "answer for B"]


@pytest.mark.parametrize("through", ["the same agent object", "another agent object"])
async def test_an_answer_redacted_after_the_pause_is_stored_redacted_when_the_run_resumes(
    alice: Scope, through: str
) -> None:
    """``PIIMiddleware`` redacts the answer that calls the reviewed tool after it was recorded;
    the run pauses for review and is resumed, through another agent object too (an agent built
    per request, which knows the run's messages only from the store): the store keeps what the
    state holds. Resumed elsewhere, the answer stayed stored unredacted."""
    conv = await alice.start_conversation()
    saver = InMemorySaver()
    asking = call("add", "c1", a=1, b=2)
    asking.content = "Mailing bob@example.com the sum."
    model = fake(asking, "done")
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}

    def build() -> Any:
        pii = PIIMiddleware("email", strategy="redact", apply_to_output=True)
        review = HumanInTheLoopMiddleware(interrupt_on={"add": True})
        return agent(alice, conv.id, model, tools=[add], checkpointer=saver, after=[review, pii])

    first = build()
    assert "__interrupt__" in await first.ainvoke(user("1+2, and mail bob"), thread)
    resuming = first if through == "the same agent object" else build()
    out = await resuming.ainvoke(Command(resume={"decisions": [{"type": "approve"}]}), thread)

    (run,) = await histories(alice, conv.id)
    assert (
        [m.content for m in run.messages or []]
        == [m.text for m in out["messages"]]
        == [
            "1+2, and mail bob",
            "Mailing [REDACTED_EMAIL] the sum.",
            "3",
            "done",
        ]
    )
    assert run.status == "completed"


async def test_a_thread_sending_its_failed_first_turn_again_is_given_no_other_thread(alice: Scope) -> None:
    """Thread B's first turn failed at the provider; thread A recorded a turn in the same
    conversation; B's client sends the turn again with the same id. The thread's state holds
    its stored input: nothing is loaded into it, as for any thread holding a stored message."""
    conv = await alice.start_conversation()
    saver = InMemorySaver()
    thread_a: RunnableConfig = {"configurable": {"thread_id": "A"}}
    thread_b: RunnableConfig = {"configurable": {"thread_id": "B"}}
    failing = agent(alice, conv.id, fake(RuntimeError("provider down")), checkpointer=saver)
    with pytest.raises(RuntimeError, match="provider down"):
        await failing.ainvoke(user("b1", "b-1"), thread_b)
    answering_a = agent(alice, conv.id, fake("answer for A"), checkpointer=saver)
    await answering_a.ainvoke(user("secret of A"), thread_a)

    model = fake("answer for B")
    out = await agent(alice, conv.id, model, checkpointer=saver).ainvoke(user("b1", "b-1"), thread_b)

    assert [m.text for m in model.seen[0][1:]] == ["b1"]
    assert [m.text for m in out["messages"]] == ["b1", "answer for B"]
