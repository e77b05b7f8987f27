"""ChatMemoryMiddleware on create_agent: one history per run, provenance, parts and native form."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from chatmemory_langchain import NATIVE_FORMAT, ChatMemoryMiddleware, from_stored
from langchain.agents import create_agent
from langchain.agents.middleware import ModelCallLimitMiddleware, PIIMiddleware
from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ModelCallResult,
    ModelRequest,
    ModelResponse,
    hook_config,
)
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import StreamMode

from chatmemory import ConversationNotFound, ImagePart, TextPart, ToolCallPart, ToolResultPart
from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import FakeChat, call, fake
from tests.plugins.langchain_adapter._helpers import SYSTEM, agent, histories, rows, user


async def test_two_runs_with_different_models_record_two_histories(alice: Scope) -> None:
    conv = await alice.start_conversation()
    await agent(alice, conv.id, fake("Hello!", name="fake-a")).ainvoke(user("Hi"))
    second = fake("Again!", name="fake-b")
    await agent(alice, conv.id, second).ainvoke(user("Once more"))

    first_run, second_run = await histories(alice, conv.id)
    assert (first_run.model, first_run.system_prompts, first_run.status) == ("fake-a", [SYSTEM], "completed")
    assert (second_run.model, second_run.status) == ("fake-b", "completed")
    assert rows(first_run.messages) == [("user", None, "Hi"), ("assistant", "fake-a", "Hello!")]
    assert rows(second_run.messages) == [("user", None, "Once more"), ("assistant", "fake-b", "Again!")]
    assert second_run.metadata == {"framework": "langchain", "host": socket.gethostname(), "pid": os.getpid()}
    # The second agent had no memory of its own: the stored conversation was loaded.
    assert [m.text for m in second.seen[0]] == [SYSTEM, "Hi", "Hello!", "Once more"]


async def test_tool_call_and_result_are_paired_parts_with_the_native_message(alice: Scope) -> None:
    conv = await alice.start_conversation()
    out = await agent(alice, conv.id, fake(call("add", "call-1", a=2, b=3), "5")).ainvoke(user("2+3?"))

    (run,) = await histories(alice, conv.id)
    stored = run.messages or []
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1].parts == [ToolCallPart(id="call-1", name="add", arguments={"a": 2, "b": 3})]
    assert stored[2].parts == [ToolResultPart(call_id="call-1", content="5")]
    assert all(m.native is not None and m.native.format == NATIVE_FORMAT for m in stored)
    assert [from_stored(m) for m in stored] == out["messages"]


async def test_multimodal_input_is_stored_as_parts(alice: Scope) -> None:
    conv = await alice.start_conversation()
    content: list[str | dict[str, Any]] = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "url": "https://example.com/cat.png"},
        {"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
    ]
    model = fake("Cats.")
    await agent(alice, conv.id, model).ainvoke({"messages": [HumanMessage(content=content, id="in-1")]})

    (run,) = await histories(alice, conv.id)
    question = (run.messages or [])[0]
    assert question.content == "What is in these?"
    assert question.parts == [
        TextPart(text="What is in these?"),
        ImagePart(url="https://example.com/cat.png"),
        ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
        ImagePart(data="/9j/4AAQ", media_type="image/jpeg"),
    ]
    assert from_stored(question) == model.seen[0][1] == HumanMessage(content=content, id="in-1")


class SwitchModel(AgentMiddleware[Any, Any, Any]):
    """Sends every model call after the first to another model."""

    def __init__(self, other: FakeChat) -> None:
        super().__init__()
        self.other = other
        self.calls = 0

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelCallResult[Any]:
        self.calls += 1
        return await handler(request if self.calls == 1 else request.override(model=self.other))


async def test_a_model_change_inside_a_run_is_recorded_per_message(alice: Scope) -> None:
    conv = await alice.start_conversation()
    primary = fake(call("add", "c1", a=1, b=1), name="fake-a")
    reported = AIMessage(content="2", response_metadata={"model_name": "fake-b-2025-01"})
    switch = SwitchModel(fake(call("add", "c2", a=2, b=0), reported, name="fake-b"))
    await agent(alice, conv.id, primary, before=[switch]).ainvoke(user("1+1?"))

    (run,) = await histories(alice, conv.id)
    assert run.model == "fake-a"
    assistants = [m.model for m in run.messages or [] if m.role == "assistant"]
    # Stamped from the request when the model reports nothing; the provider's name wins otherwise.
    assert assistants == ["fake-a", "fake-b", "fake-b-2025-01"]
    assert [m.model for m in run.messages or [] if m.role != "assistant"] == [None, None, None]


async def test_a_failing_model_leaves_a_failed_history_with_everything_before_it(alice: Scope) -> None:
    conv = await alice.start_conversation()
    model = fake(call("add", "c1", a=2, b=2), RuntimeError("model is down"))
    with pytest.raises(RuntimeError, match="model is down"):
        await agent(alice, conv.id, model).ainvoke(user("2+2?"))

    (run,) = await histories(alice, conv.id)
    assert run.status == "failed"
    assert run.error is not None
    assert "model is down" in run.error
    assert rows(run.messages) == [("user", None, "2+2?"), ("assistant", "fake-a", ""), ("tool", None, "4")]


async def test_a_failing_tool_leaves_a_failed_history(alice: Scope) -> None:
    conv = await alice.start_conversation()
    model = fake(call("explode", "c1", reason="no fuel"), "unreachable")
    with pytest.raises(RuntimeError, match="no fuel"):
        await agent(alice, conv.id, model).ainvoke(user("Go"))

    (run,) = await histories(alice, conv.id)
    assert (run.status, [m.role for m in run.messages or []]) == ("failed", ["user", "assistant"])
    assert run.error is not None
    assert "no fuel" in run.error


async def test_a_run_cancelled_while_its_tool_runs_is_cancelled_with_what_it_produced(alice: Scope) -> None:
    started = asyncio.Event()

    @tool
    async def wait_forever(seconds: int) -> str:
        """Waits."""
        started.set()
        await asyncio.sleep(seconds)
        return "never"

    conv = await alice.start_conversation()
    model = fake(call("wait_forever", "c1", seconds=60), "unreachable")
    running = asyncio.create_task(agent(alice, conv.id, model, tools=[wait_forever]).ainvoke(user("Wait")))
    await asyncio.wait_for(started.wait(), timeout=10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    (run,) = await histories(alice, conv.id)
    assert (run.status, run.error) == (
        "cancelled",
        "CancelledError: the task running the agent was cancelled",
    )
    assert rows(run.messages) == [("user", None, "Wait"), ("assistant", "fake-a", "")]


async def test_a_run_cancelled_again_while_it_closes_is_still_closed_cancelled(alice: Scope) -> None:
    """A second cancellation (a task group tearing down, a second Ctrl-C) landing while the
    cancelled run closes its history does not leave the history ``running``."""
    for delay in range(0, 20, 2):  # the second cancellation lands at each step of the close
        started = asyncio.Event()

        @tool
        async def wait_forever(seconds: int, started: asyncio.Event = started) -> str:
            """Waits."""
            started.set()
            await asyncio.sleep(seconds)
            return "never"

        conv = await alice.start_conversation()
        model = fake(call("wait_forever", "c1", seconds=60), "unreachable")
        graph = agent(alice, conv.id, model, tools=[wait_forever])
        running = asyncio.create_task(graph.ainvoke(user("Wait")))
        await asyncio.wait_for(started.wait(), timeout=10)
        running.cancel()
        for _ in range(delay):
            await asyncio.sleep(0)
        running.cancel()
        await asyncio.wait({running}, timeout=10)
        assert running.cancelled()
        (run,) = await histories(alice, conv.id)
        assert (delay, run.status) == (delay, "cancelled")


@pytest.mark.parametrize("mode", ["messages", "updates", "values"])
async def test_a_streamed_run_is_recorded_like_a_plain_one(alice: Scope, mode: StreamMode) -> None:
    plain, streamed = await alice.start_conversation(), await alice.start_conversation()
    replies = (call("add", "c1", a=20, b=22), "It is 42.")
    await agent(alice, plain.id, fake(*replies)).ainvoke(user("20+22?"))
    chunks = [
        c async for c in agent(alice, streamed.id, fake(*replies)).astream(user("20+22?"), stream_mode=mode)
    ]
    assert chunks

    (want,), (got,) = await histories(alice, plain.id), await histories(alice, streamed.id)
    assert (got.model, got.status) == (want.model, want.status) == ("fake-a", "completed")
    assert [(m.role, m.model, m.content, m.parts) for m in got.messages or []] == [
        (m.role, m.model, m.content, m.parts) for m in want.messages or []
    ]


async def test_resuming_shows_the_model_what_the_full_conversation_would(alice: Scope) -> None:
    conv, scratch = await alice.start_conversation(), await alice.start_conversation()
    first = await agent(alice, conv.id, fake(call("add", "c1", a=1, b=2), "3")).ainvoke(user("1+2?"))

    resumed = fake("6")
    await agent(alice, conv.id, resumed).ainvoke(user("And 3+3?", "u-2"))
    in_memory = fake("6")
    full = [*first["messages"], HumanMessage("And 3+3?", id="u-2")]
    await agent(alice, scratch.id, in_memory).ainvoke({"messages": full})

    assert resumed.seen == in_memory.seen
    assert [m.type for m in resumed.seen[0]] == ["system", "human", "ai", "tool", "ai", "human"]
    # Loaded messages are not recorded again: the second history holds only the new ones.
    assert [rows(h.messages) for h in await histories(alice, conv.id)][1] == [
        ("user", None, "And 3+3?"),
        ("assistant", "fake-a", "6"),
    ]


async def test_another_principal_cannot_record_into_or_load_a_conversation(alice: Scope, bob: Scope) -> None:
    conv = await alice.start_conversation()
    await agent(alice, conv.id, fake("Secret")).ainvoke(user("Tell me"))
    snooper = fake("?")
    with pytest.raises(ConversationNotFound):
        await agent(bob, conv.id, snooper).ainvoke(user("What did alice say?"))
    assert snooper.seen == []
    assert len(await histories(alice, conv.id)) == 1


class Guardrail(AgentMiddleware[AgentState[Any], Any, Any]):
    """Answers a forbidden request itself and ends the run before any model call (the
    guardrail of LangChain's middleware guide)."""

    @hook_config(can_jump_to=["end"])
    def before_agent(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        if "forbidden" in state["messages"][-1].text:
            return {"messages": [AIMessage("I cannot help with that.")], "jump_to": "end"}
        return None


@pytest.mark.parametrize("guard", ["before", "after"])
async def test_a_run_a_guardrail_ends_before_any_model_call_is_recorded(alice: Scope, guard: str) -> None:
    """The run's input and the guardrail's answer are the run's output: they are recorded as a
    history of their own, with the model "unknown" (no model produced the answer). Nothing was
    recorded of such a run."""
    conv = await alice.start_conversation()
    memory = ChatMemoryMiddleware(alice, conv.id)
    order: list[AgentMiddleware[Any, Any, Any]] = [Guardrail(), memory]
    if guard == "after":
        order.reverse()
    guarded = create_agent(fake("Hello!", name="fake-a"), [], middleware=order)

    await guarded.ainvoke(user("something forbidden"))
    await guarded.ainvoke(user("hi"))
    out = await guarded.ainvoke(user("forbidden again"))

    refused, answered, again = await histories(alice, conv.id)
    assert (refused.model, refused.status) == ("unknown", "completed")
    assert rows(refused.messages) == [
        ("user", None, "something forbidden"),
        ("assistant", "unknown", "I cannot help with that."),
    ]
    assert (answered.model, again.model, again.status) == ("fake-a", "unknown", "completed")
    assert [m.text for m in out["messages"]][-2:] == ["forbidden again", "I cannot help with that."]
    assert [m.content for m in await alice.transcript(conv.id)] == [
        "something forbidden",
        "I cannot help with that.",
        "hi",
        "Hello!",
        "forbidden again",
        "I cannot help with that.",
    ]


async def test_a_thread_whose_model_call_limit_ends_its_run_keeps_what_the_run_added(alice: Scope) -> None:
    conv = await alice.start_conversation()
    limited = agent(
        alice,
        conv.id,
        fake("one", "two"),
        before=[ModelCallLimitMiddleware(thread_limit=1, exit_behavior="end")],
        checkpointer=InMemorySaver(),
    )
    config: Any = {"configurable": {"thread_id": "t"}}
    await limited.ainvoke(user("first"), config)
    out = await limited.ainvoke(user("second"), config)

    assert (
        [m.content for m in await alice.transcript(conv.id)]
        == [m.text for m in out["messages"]]
        == [
            "first",
            "one",
            "second",
            "Model call limits exceeded: thread limit (1/1)",
        ]
    )


async def test_an_input_sent_again_with_its_stored_id_gets_the_stored_conversation(alice: Scope) -> None:
    """A client sending a turn again with the same message ids (its first try failed): the
    stored input alone does not mean the agent holds the conversation, which is loaded, the
    input in the place its id has there (as LangGraph's ``add_messages`` puts a message with an
    id the state holds). The model was given the input alone."""
    conv = await alice.start_conversation()
    model = fake("Hi Ann.", RuntimeError("provider 503"), "Your name is Ann.", "Still Ann.")
    await agent(alice, conv.id, model).ainvoke(user("I am Ann", "m1"))
    with pytest.raises(RuntimeError, match="provider 503"):
        await agent(alice, conv.id, model).ainvoke(user("What is my name?", "m2"))

    out = await agent(alice, conv.id, model).ainvoke(user("What is my name?", "m2"))

    exchange = ["I am Ann", "Hi Ann.", "What is my name?"]
    assert [m.text for m in model.seen[-1][1:]] == exchange
    assert [m.text for m in out["messages"]] == [*exchange, "Your name is Ann."]
    # Sent again after it was answered: given the conversation in its stored order.
    await agent(alice, conv.id, model).ainvoke(user("What is my name?", "m2"))
    assert [m.text for m in model.seen[-1][1:]] == [*exchange, "Your name is Ann."]
    assert [m.content for m in await alice.transcript(conv.id)] == [
        "I am Ann",
        "Hi Ann.",
        "What is my name?",
        "Your name is Ann.",
        "Still Ann.",
    ]


@tool
def lookup(who: str) -> str:
    """Look a customer up."""
    return f"{who}: bob@example.com"


@pytest.mark.parametrize("pii_first", [True, False])
async def test_messages_a_middleware_redacts_after_they_were_recorded_are_stored_redacted(
    alice: Scope, pii_first: bool
) -> None:
    """``PIIMiddleware`` redacts the answer after the model (its ``after_model``) and tool results
    before the next model call, each in place by id, after this middleware recorded them: the
    store keeps what the agent's state holds, so a resumed run never hands the address back to
    the model. The store kept the first versions."""
    conv = await alice.start_conversation()
    pii = PIIMiddleware("email", strategy="redact", apply_to_output=True, apply_to_tool_results=True)
    memory = ChatMemoryMiddleware(alice, conv.id)
    model = fake(call("lookup", "c1", who="bob"), "Bob's email is bob@example.com", name="fake-a")
    out = await create_agent(
        model, [lookup], middleware=[pii, memory] if pii_first else [memory, pii]
    ).ainvoke(user("find bob"))

    (run,) = await histories(alice, conv.id)
    assert (
        [m.content for m in run.messages or []]
        == [m.text for m in out["messages"]]
        == [
            "find bob",
            "",
            "bob: [REDACTED_EMAIL]",
            "Bob's email is [REDACTED_EMAIL]",
        ]
    )
    assert (run.status, [m.model for m in run.messages or []]) == (
        "completed",
        [None, "fake-a", None, "fake-a"],
    )
    later = fake("ok")
    await create_agent(later, [], middleware=[ChatMemoryMiddleware(alice, conv.id)]).ainvoke(user("next"))
    assert not any("bob@example.com" in m.text for m in later.seen[0])
    assert [from_stored(m) for m in run.messages or []] == out["messages"]


async def test_an_input_sent_again_with_a_follow_up_gets_the_stored_conversation(alice: Scope) -> None:
    """No checkpointer: the stored input sent again, then a new user message, are the turn's
    input, which holds nothing: the conversation is loaded before them. The stored input
    alone was taken for the state holding the conversation."""
    conv = await alice.start_conversation()
    model = fake("Paris.", RuntimeError("provider 503"), "Rome.")
    await agent(alice, conv.id, model).ainvoke(user("capital of France?", "m1"))
    with pytest.raises(RuntimeError, match="provider 503"):
        await agent(alice, conv.id, model).ainvoke(user("and of Italy?", "m2"))
    again = {"messages": [*user("and of Italy?", "m2")["messages"], *user("are you there?")["messages"]]}

    await agent(alice, conv.id, model).ainvoke(again)

    assert [m.text for m in model.seen[-1][1:]] == [
        "capital of France?",
        "Paris.",
        "and of Italy?",
        "are you there?",
    ]
