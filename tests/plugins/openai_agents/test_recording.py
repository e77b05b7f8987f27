"""Each agent run is recorded as one history with per-message models, parts and native items."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from agents import AgentHooks, MaxTurnsExceeded, RunHooks, Runner, function_tool
from agents.testing import ModelCall, ModelStep, assistant_message, function_call
from chatmemory_openai_agents import NATIVE_FORMAT, ChatMemorySession

from chatmemory import (
    Conversation,
    FilePart,
    ImagePart,
    Message,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, add, make_agent

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()


def shape(messages: list[Message]) -> list[tuple[str, str | None, str]]:
    return [(m.role, m.model, m.content) for m in messages]


async def test_two_runs_with_different_models(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id, metadata={"app": "demo"})
    first = make_agent("helper", NamedModel("model-a", [[assistant_message("Hello!")]]), "Say hello.")
    second = make_agent("helper", NamedModel("model-b", [[assistant_message("Bye!")]]), "Say bye.")

    assert (await session.run(first, "Hi")).final_output == "Hello!"
    assert (await session.run(second, "Later")).final_output == "Bye!"

    detail = await alice.get_conversation(conversation.id, messages=True)
    assert [h.model for h in detail.histories] == ["model-a", "model-b"]
    assert [h.system_prompts for h in detail.histories] == [["Say hello."], ["Say bye."]]
    assert [h.status for h in detail.histories] == ["completed", "completed"]
    run1, run2 = detail.histories
    assert run1.metadata is not None
    assert run1.metadata["app"] == "demo"
    assert run1.metadata["agent"] == "helper"
    assert run1.metadata["framework"] == "openai-agents"
    assert run1.usage == {"requests": 1, "input_tokens": 10, "output_tokens": 4, "total_tokens": 14}
    assert shape(run1.messages or []) == [("user", None, "Hi"), ("assistant", "model-a", "Hello!")]
    assert shape(run2.messages or []) == [("user", None, "Later"), ("assistant", "model-b", "Bye!")]
    assert all(m.native is not None and m.native.format == NATIVE_FORMAT for m in run1.messages or [])
    assert [m.seq for m in await alice.transcript(conversation.id)] == [1, 2, 3, 4]


async def test_tool_call_and_result_are_paired_parts(alice: Scope, conversation: Conversation) -> None:
    model = NamedModel(
        "model-a",
        [[function_call("add", {"a": 2, "b": 3}, call_id="call-1")], [assistant_message("2+3=5")]],
    )
    session = ChatMemorySession(alice, conversation.id)
    await session.run(make_agent("calc", model, tools=[add]), "What is 2+3?")

    messages = await alice.transcript(conversation.id)
    assert shape(messages) == [
        ("user", None, "What is 2+3?"),
        ("assistant", "model-a", ""),
        ("tool", None, "5"),
        ("assistant", "model-a", "2+3=5"),
    ]
    assert messages[1].parts == [ToolCallPart(id="call-1", name="add", arguments='{"a":2,"b":3}')]
    assert messages[2].parts == [ToolResultPart(call_id="call-1", content="5")]
    assert messages[1].native is not None
    assert messages[1].native.data == {
        "type": "function_call",
        "call_id": "call-1",
        "id": "call-1",
        "name": "add",
        "arguments": '{"a":2,"b":3}',
    }


async def test_multimodal_input_is_stored_as_parts(alice: Scope, conversation: Conversation) -> None:
    user_item = {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "What is in these?"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
            {"type": "input_file", "file_url": "https://example.com/report.pdf", "filename": "report.pdf"},
        ],
    }
    session = ChatMemorySession(alice, conversation.id)
    agent = make_agent("vision", NamedModel("model-v", [[assistant_message("A cat and a report.")]]))
    await session.run(agent, [user_item])  # type: ignore[list-item]

    user = (await alice.transcript(conversation.id))[0]
    assert user.role == "user"
    assert user.content == "What is in these?"
    assert user.parts == [
        TextPart(text="What is in these?"),
        ImagePart(data=PNG, media_type="image/png"),
        FilePart(url="https://example.com/report.pdf", filename="report.pdf"),
    ]
    assert user.native is not None
    assert user.native.data == user_item
    assert (await session.get_items())[0] == user_item


async def test_handoff_records_the_model_of_each_message(alice: Scope, conversation: Conversation) -> None:
    calc = make_agent(
        "calc",
        NamedModel(
            "model-calc",
            [[function_call("add", {"a": 2, "b": 3}, call_id="c2")], [assistant_message("5", item_id="m2")]],
        ),
        "You add.",
        tools=[add],
    )
    triage = make_agent(
        "triage",
        NamedModel("model-triage", [[function_call("transfer_to_calc", {}, call_id="c1")]]),
        "Route to calc.",
        handoffs=[calc],
    )
    session = ChatMemorySession(alice, conversation.id)
    assert (await session.run(triage, "2+3?")).final_output == "5"

    detail = await alice.get_conversation(conversation.id, messages=True)
    (run,) = detail.histories
    assert run.model == "model-triage"
    assert run.system_prompts == ["Route to calc."]
    messages = run.messages or []
    assert [(m.role, m.model) for m in messages] == [
        ("user", None),
        ("assistant", "model-triage"),
        ("tool", None),
        ("assistant", "model-calc"),
        ("tool", None),
        ("assistant", "model-calc"),
    ]
    assert [m.metadata for m in messages if m.role == "assistant"] == [
        {"agent": "triage"},
        {"agent": "calc"},
        {"agent": "calc"},
    ]


async def test_a_failing_run_leaves_a_failed_history(alice: Scope, conversation: Conversation) -> None:
    model = NamedModel(
        "model-a",
        [[function_call("add", {"a": 1, "b": 1}, call_id="c1")], ModelStep.raise_error(RuntimeError("boom"))],
    )
    session = ChatMemorySession(alice, conversation.id)
    with pytest.raises(RuntimeError, match="boom"):
        await session.run(make_agent("calc", model, tools=[add]), "1+1?")

    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert run.status == "failed"
    assert run.error is not None
    assert "boom" in run.error
    assert run.finished_at is not None
    assert shape(run.messages or []) == [
        ("user", None, "1+1?"),
        ("assistant", "model-a", ""),
        ("tool", None, "2"),
    ]


async def test_a_run_failing_before_its_first_model_call_keeps_its_input(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    agent = make_agent("helper", NamedModel("model-a", []))
    with pytest.raises(MaxTurnsExceeded):
        await session.run(agent, "Hi", max_turns=0)

    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert run.status == "failed"
    assert run.model == "model-a"
    assert shape(run.messages or []) == [("user", None, "Hi")]


async def test_streamed_run_is_recorded_like_a_plain_run(alice: Scope, conversation: Conversation) -> None:
    def script(name: str) -> NamedModel:
        return NamedModel(
            name, [[function_call("add", {"a": 2, "b": 3}, call_id="c1")], [assistant_message("2+3=5")]]
        )

    plain_conversation = await alice.start_conversation()
    await ChatMemorySession(alice, plain_conversation.id).run(
        make_agent("calc", script("m"), tools=[add]), "2+3?"
    )

    session = ChatMemorySession(alice, conversation.id)
    result = session.run_streamed(make_agent("calc", script("m"), tools=[add]), "2+3?")
    events = [event.type async for event in result.stream_events()]
    assert "raw_response_event" in events
    assert result.final_output == "2+3=5"

    (streamed,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    (plain,) = (await alice.get_conversation(plain_conversation.id, messages=True)).histories
    assert streamed.status == plain.status == "completed"
    assert (streamed.model, streamed.system_prompts) == (plain.model, plain.system_prompts)
    assert shape(streamed.messages or []) == shape(plain.messages or [])
    assert [m.parts for m in streamed.messages or []] == [m.parts for m in plain.messages or []]
    assert [m.native for m in streamed.messages or []] == [m.native for m in plain.messages or []]


async def test_a_failing_streamed_run_leaves_a_failed_history(
    alice: Scope, conversation: Conversation
) -> None:
    model = NamedModel("model-a", [ModelStep.raise_error(RuntimeError("stream broke"))])
    session = ChatMemorySession(alice, conversation.id)
    result = session.run_streamed(make_agent("helper", model), "Hi")
    with pytest.raises(RuntimeError, match="stream broke"):
        async for _ in result.stream_events():
            pass

    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert run.status == "failed"
    assert run.error is not None
    assert "stream broke" in run.error
    assert shape(run.messages or []) == [("user", None, "Hi")]


async def _run_waiting_for_its_model(alice: Scope, conversation: Conversation) -> asyncio.Task[Any]:
    """``session.run`` of an agent whose model never answers, once it is waiting for it."""
    started = asyncio.Event()

    async def never_answers(call: ModelCall) -> list[Any]:
        started.set()
        await asyncio.Event().wait()
        return []

    session = ChatMemorySession(alice, conversation.id)
    agent = make_agent("helper", NamedModel("model-a", [ModelStep.respond(never_answers)]))
    task = asyncio.create_task(session.run(agent, "Hi"))
    await started.wait()
    return task


async def test_a_cancelled_run_leaves_a_cancelled_history(alice: Scope, conversation: Conversation) -> None:
    task = await _run_waiting_for_its_model(alice, conversation)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert run.status == "cancelled"
    # A cancellation carries no message of its own: the error says what it stopped.
    assert run.error == "CancelledError: the task running the agent was cancelled"
    assert shape(run.messages or []) == [("user", None, "Hi")]


async def test_a_run_cancelled_again_while_it_closes_is_still_closed_cancelled(alice: Scope) -> None:
    """A second cancellation (a task group tearing down, a second Ctrl-C) landing while the
    cancelled run closes its history does not leave the history ``running``."""
    for delay in range(0, 20, 2):  # the second cancellation lands at each step of the close
        conversation = await alice.start_conversation()
        task = await _run_waiting_for_its_model(alice, conversation)
        task.cancel()
        for _ in range(delay):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task}, timeout=10)
        assert task.cancelled()
        (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
        assert (delay, run.status) == (delay, "cancelled")


async def test_concurrent_runs_on_one_session_get_their_own_histories(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    agents = [
        make_agent(f"a{i}", NamedModel(f"model-{i}", [[assistant_message(f"answer {i}")]])) for i in range(3)
    ]
    await asyncio.gather(*(session.run(a, f"question {i}") for i, a in enumerate(agents)))

    histories = (await alice.get_conversation(conversation.id, messages=True)).histories
    by_model = {h.model: shape(h.messages or []) for h in histories}
    assert by_model == {
        f"model-{i}": [("user", None, f"question {i}"), ("assistant", f"model-{i}", f"answer {i}")]
        for i in range(3)
    }


@pytest.mark.parametrize("wiring", ["session.run", "run+hooks", "run"])
async def test_a_tool_output_over_the_store_limits_is_recorded_and_read_back_whole(
    wiring: str, alice: Scope, conversation: Conversation
) -> None:
    page = "x" * 100_001

    @function_tool
    def fetch() -> str:
        """Return a huge page."""
        return page

    model = NamedModel("model-a", [[function_call("fetch", {}, call_id="c1")], [assistant_message("Done.")]])
    agent = make_agent("reader", model, tools=[fetch])
    session = ChatMemorySession(alice, conversation.id)
    if wiring == "session.run":
        result = await session.run(agent, "Read it.")
    else:
        hooks = session.hooks if wiring == "run+hooks" else None
        result = await Runner.run(agent, "Read it.", session=session, hooks=hooks)
    assert result.final_output == "Done."

    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert run.status == "completed"
    assert [m.role for m in run.messages or []] == ["user", "assistant", "tool", "assistant"]
    output = (run.messages or [])[2]
    assert len(output.content) <= alice.limits.content and page.startswith(output.content.split("\n[")[0])
    (item,) = [i for i in await session.get_items() if i.get("type") == "function_call_output"]
    assert item["output"] == page


class _Calls(RunHooks[Any]):
    """A user's own run hooks, noting each event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def on_llm_start(self, context: Any, agent: Any, system_prompt: Any, input_items: Any) -> None:
        self.events.append(("llm_start", None))

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        self.events.append(("tool_end", result))

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        self.events.append(("agent_end", output))


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_run_with_the_users_own_hooks_calls_them_after_the_sessions(
    streamed: bool, alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    steps = [[function_call("add", {"a": 2, "b": 3}, call_id="c1")], [assistant_message("5")]]
    agent = make_agent("calc", NamedModel("calc-model", steps), tools=[add])
    calls = _Calls()
    own_llm_start = session.hooks.on_llm_start

    async def noted(*args: Any) -> None:
        calls.events.append(("session llm_start", None))
        await own_llm_start(*args)

    session.hooks.on_llm_start = noted  # type: ignore[method-assign]
    if streamed:
        result: Any = session.run_streamed(agent, "2+3?", hooks=calls)
        async for _ in result.stream_events():
            pass
    else:
        result = await session.run(agent, "2+3?", hooks=calls)

    assert result.final_output == "5"
    assert [name for name, _ in calls.events] == [
        "session llm_start",
        "llm_start",
        "tool_end",
        "session llm_start",
        "llm_start",
        "agent_end",
    ]
    assert (calls.events[2], calls.events[-1]) == (("tool_end", 5), ("agent_end", "5"))
    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert (run.model, run.status) == ("calc-model", "completed")
    assert [m.model for m in run.messages or [] if m.role == "assistant"] == ["calc-model", "calc-model"]


async def test_a_run_given_agent_hooks_or_a_session_is_refused_before_it_starts(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    agent = make_agent("calc", NamedModel("m", [[assistant_message("5")]]))
    with pytest.raises(TypeError, match=r"Agent\(\.\.\., hooks=\.\.\.\)"):
        await session.run(agent, "Hi", hooks=AgentHooks())
    with pytest.raises(TypeError, match="takes RunHooks"):
        session.run_streamed(agent, "Hi", hooks=object())
    with pytest.raises(TypeError, match="pass no session="):
        await session.run(agent, "Hi", session=session)
    assert (await alice.get_conversation(conversation.id)).histories == []
    assert (await session.run(agent, "Hi", hooks=session.hooks)).final_output == "5"
