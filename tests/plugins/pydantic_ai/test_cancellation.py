"""A tool that cancels its run: what is stored, and how the next run resumes.

Ported from pydantic/pydantic-ai ``tests/test_run_cancellation.py``
(``test_tool_cancels_run_and_history_is_resumable``), rewritten so the history goes through
chatmemory: the stored run must hold what ``RunCancelled.all_messages()`` holds, and a run
resumed from the store must send the model what pydantic-ai's own resume sends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from chatmemory_pydantic_ai import ChatMemoryCapability, load_messages, to_model_messages
from pydantic_ai import (
    Agent,
    CallToolsNode,
    RunCancelled,
    RunContext,
    RunTimedOut,
    capture_run_messages,
    models,
)
from pydantic_ai.capabilities import AbstractCapability, ProcessHistory
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestContext
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import ToolDefinition

from chatmemory import ToolCallPart as StoredCall
from chatmemory import ToolResultPart
from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import shape

models.ALLOW_MODEL_REQUESTS = False


def _parallel_tools_agent(**kwargs: Any) -> tuple[Agent[None, str], list[list[ModelMessage]]]:
    """An agent whose first response calls a fast tool and a slow self-cancelling tool."""
    seen_by_model: list[list[ModelMessage]] = []

    def model_func(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen_by_model.append(list(messages))
        if len(messages) == 1:
            return ModelResponse(
                parts=[
                    ToolCallPart(tool_name="fast_tool", args={}, tool_call_id="call_fast"),
                    ToolCallPart(tool_name="cancelling_tool", args={}, tool_call_id="call_slow"),
                ]
            )
        return ModelResponse(parts=[TextPart(f"done after {len(messages)}")])

    agent = Agent(FunctionModel(model_func, model_name="fn-cancel"), **kwargs)

    @agent.tool_plain
    async def fast_tool() -> str:
        return "fast result"

    @agent.tool
    async def cancelling_tool(ctx: RunContext[None]) -> str:
        await asyncio.sleep(0.05)  # let the sibling finish first
        ctx.cancel()
        await asyncio.sleep(5)
        raise AssertionError("unreachable")

    return agent, seen_by_model


async def test_a_tool_cancelling_the_run_keeps_the_finished_tools_result(alice: Scope) -> None:
    conv = await alice.start_conversation()
    agent, _ = _parallel_tools_agent(capabilities=[ChatMemoryCapability(alice, conv.id)])

    with pytest.raises(RunCancelled) as raised:
        await agent.run("go")

    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (history.status, history.error) == ("cancelled", "RunCancelled: The agent run was cancelled.")
    user, call, result = history.messages or []
    assert (user.role, user.content) == ("user", "go")
    assert call.parts == [
        StoredCall(id="call_fast", name="fast_tool", arguments={}),
        StoredCall(id="call_slow", name="cancelling_tool", arguments={}),
    ]
    assert (result.role, result.parts) == (
        "tool",
        [ToolResultPart(call_id="call_fast", content="fast result")],
    )
    assert shape(await load_messages(alice, conv.id)) == shape(raised.value.all_messages())
    assert (await load_messages(alice, conv.id))[-1].state == "interrupted"  # type: ignore[union-attr]


async def test_the_next_run_resumes_a_cancelled_one_as_pydantic_ai_does(alice: Scope) -> None:
    conv = await alice.start_conversation()
    ours, ours_seen = _parallel_tools_agent(capabilities=[ChatMemoryCapability(alice, conv.id)])
    theirs, theirs_seen = _parallel_tools_agent()
    with pytest.raises(RunCancelled):
        await ours.run("go")
    with pytest.raises(RunCancelled) as raised:
        await theirs.run("go")

    await ours.run("never mind, wrap up")
    kept = await theirs.run("never mind, wrap up", message_history=raised.value.all_messages())

    assert shape(ours_seen[-1]) == shape(theirs_seen[-1])
    resumed = ours_seen[-1][-1]
    assert [(p.part_kind, getattr(p, "outcome", None)) for p in resumed.parts] == [
        ("tool-return", "success"),
        ("tool-return", "interrupted"),  # synthesised by pydantic-ai for the cancelled call
        ("user-prompt", None),
    ]
    # A third turn, where the interrupted request is no longer the last one, still matches.
    await ours.run("and now?")
    await theirs.run("and now?", message_history=kept.all_messages())
    assert shape(ours_seen[-1]) == shape(theirs_seen[-1])
    first, second, third = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (first.status, second.status, third.status) == ("cancelled", "completed", "completed")


async def test_a_tool_failing_the_run_keeps_what_pydantic_ai_captured(alice: Scope) -> None:
    conv = await alice.start_conversation()

    def model_func(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(
            parts=[
                ToolCallPart(tool_name="fast_tool", args={}, tool_call_id="call_fast"),
                ToolCallPart(tool_name="failing_tool", args={}, tool_call_id="call_bad"),
            ]
        )

    agent = Agent(FunctionModel(model_func, model_name="fn-fail"))

    @agent.tool_plain
    async def fast_tool() -> str:
        return "fast result"

    @agent.tool_plain
    async def failing_tool() -> str:
        await asyncio.sleep(0.05)
        raise RuntimeError("tool broke")

    with capture_run_messages() as captured, pytest.raises(RuntimeError, match="tool broke"):
        await agent.run("go", capabilities=[ChatMemoryCapability(alice, conv.id)])

    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (history.status, history.error) == ("failed", "RuntimeError: tool broke")
    assert shape(await load_messages(alice, conv.id)) == shape(captured)
    assert [m.role for m in history.messages or []] == ["user", "assistant", "tool"]


async def test_a_run_timing_out_is_cancelled_with_what_it_produced(alice: Scope) -> None:
    conv = await alice.start_conversation()
    agent, _ = _parallel_tools_agent()

    @agent.tool
    async def hang(ctx: RunContext[None]) -> str:
        # The run's deadline arrives while its tool runs, however long reaching the tool took on
        # a busy machine: what pydantic-ai's timer calls at the deadline, called here.
        ctx._cancellation.expire()  # type: ignore[union-attr]
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    def call_hang(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(tool_name="hang", args={}, tool_call_id="call_hang")])

    with pytest.raises(RunTimedOut) as raised:
        await agent.run(
            "wait",
            model=FunctionModel(call_hang, model_name="fn-hang"),
            timeout=60,  # never reached: the tool makes the deadline arrive
            capabilities=[ChatMemoryCapability(alice, conv.id)],
        )

    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (history.status, history.error) == ("cancelled", "RunTimedOut: The agent run timed out.")
    assert shape(await load_messages(alice, conv.id)) == shape(raised.value.all_messages())


@pytest.mark.parametrize("stop", ["a crashing output validator", "a cancel in the output validator"])
async def test_a_run_stopped_while_its_answer_is_validated_stores_what_pydantic_ai_holds(
    alice: Scope, stop: str
) -> None:
    """No tool runs while a response calling none is validated: stopped there, the run's
    stored messages are pydantic-ai's own, with no empty ``interrupted`` request after them."""

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("bad")])

    def agent() -> Agent[None, str]:
        built = Agent(FunctionModel(answer, model_name="fm"))

        @built.output_validator
        def check(ctx: RunContext[None], output: str) -> str:
            if stop == "a cancel in the output validator":
                ctx.cancel()
            raise ValueError("validator crashed")

        return built

    with capture_run_messages() as captured, pytest.raises((ValueError, RunCancelled)):
        await agent().run("hi")
    conv = await alice.start_conversation()
    with pytest.raises((ValueError, RunCancelled)) as raised:
        await agent().run("hi", capabilities=[ChatMemoryCapability(alice, conv.id)])

    expected = raised.value.all_messages() if isinstance(raised.value, RunCancelled) else captured
    assert shape(await load_messages(alice, conv.id)) == shape(expected)
    assert [m.role for m in await alice.transcript(conv.id)] == ["user", "assistant"]


@pytest.mark.parametrize("arrived", [False, True], ids=["while streaming", "once arrived"])
async def test_a_run_stream_left_while_its_answer_streams_stores_what_its_result_holds(
    alice: Scope, arrived: bool
) -> None:
    """A chat UI's stop button: the ``run_stream`` block is left after the first chunk. The
    answer still streaming is not in ``StreamedRunResult.all_messages()``, so it is not stored
    (nor sent to the next run's model, as it would be in the state ``incomplete``). Nor is an
    answer that had arrived whole by the first chunk (the default debounce gathers it), as its
    stream was never consumed to the end: it once was."""

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("ok")])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        for i in range(10):
            yield f"c{i} "
            if not arrived:
                await asyncio.sleep(0.02)

    agent = Agent(FunctionModel(answer, stream_function=stream, model_name="fm"))
    conv = await alice.start_conversation()
    async with agent.run_stream(
        "tell me a story", capabilities=[ChatMemoryCapability(alice, conv.id)]
    ) as run:
        async for first in run.stream_text(delta=True, debounce_by=0.1 if arrived else None):
            assert (first == "".join(f"c{i} " for i in range(10))) is arrived
            break  # stop

    assert shape(await load_messages(alice, conv.id)) == shape(run.all_messages())
    assert [m.role for m in await alice.transcript(conv.id)] == ["user"]
    (history,) = (await alice.get_conversation(conv.id)).histories
    assert history.status == "cancelled"


async def test_a_run_stream_left_once_its_answer_arrived_stores_no_answer_beside_a_history_processor(
    alice: Scope,
) -> None:
    """As above, the answer arrived whole but unread, with a history processor that keeps only
    the newest message, so the run's messages are shorter than before its request. Found by
    review: the answer was stored (its place was told by the list's length)."""

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("ok")])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        for i in range(10):
            yield f"c{i} "

    agent = Agent(
        FunctionModel(answer, stream_function=stream, model_name="fm"),
        capabilities=[ProcessHistory(lambda messages: messages[-1:])],
    )
    conv = await alice.start_conversation()
    memory = ChatMemoryCapability(alice, conv.id)
    for turn in range(2):
        await agent.run(f"turn {turn}", capabilities=[memory])
    async with agent.run_stream("tell me a story", capabilities=[memory]) as run:
        async for first in run.stream_text(delta=True, debounce_by=0.1):
            assert first == "".join(f"c{i} " for i in range(10))
            break  # stop

    assert [m.role for m in await alice.transcript(conv.id)] == ["user", "assistant"] * 2 + ["user"]
    assert (await alice.get_conversation(conv.id)).histories[-1].status == "cancelled"


@dataclass
class _Preparing(AbstractCapability[Any]):
    """A capability that prepares each model request through ``step`` (a retrieval call, an MCP
    server's tool listing), in the hook ``where``."""

    where: str
    step: Callable[[RunContext[Any]], Awaitable[None]]

    async def prepare_tools(
        self, ctx: RunContext[Any], tool_defs: list[ToolDefinition]
    ) -> list[ToolDefinition]:
        if self.where == "prepare_tools":
            await self.step(ctx)
        return tool_defs

    async def before_model_request(
        self, ctx: RunContext[Any], request_context: ModelRequestContext
    ) -> ModelRequestContext:
        if self.where == "before_model_request":
            await self.step(ctx)
        return request_context


@pytest.mark.parametrize("how", ["task.cancel()", "timeout", "an error"])
@pytest.mark.parametrize("where", ["instructions", "prepare_tools", "before_model_request"])
async def test_a_run_stopped_before_its_first_request_is_sent_keeps_its_prompt(
    alice: Scope, where: str, how: str
) -> None:
    """pydantic-ai adds a request to the run's messages before it prepares it (an async
    ``@agent.instructions`` function, a capability's ``prepare_tools`` or ``before_model_request``):
    a run stopped or failing there holds its prompt in ``capture_run_messages()`` and
    ``RunCancelled.all_messages()``, and so does the store."""
    conv = await alice.start_conversation()
    reached = asyncio.Event()

    async def step(ctx: RunContext[Any]) -> None:
        reached.set()
        if how == "an error":
            raise RuntimeError("retrieval backend down")
        if how == "timeout":
            ctx._cancellation.expire()  # type: ignore[union-attr]  # what the run's timer calls at its deadline
        await asyncio.Event().wait()  # until the run is stopped

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise AssertionError("the request is never sent")

    agent = Agent(
        FunctionModel(answer, model_name="fm"),
        capabilities=[ChatMemoryCapability(alice, conv.id), _Preparing(where, step)],
    )

    @agent.tool_plain
    def lookup() -> str:
        return "found"

    if where == "instructions":

        @agent.instructions
        async def retrieved(ctx: RunContext[None]) -> str:
            await step(ctx)
            return "Use what was retrieved."

    held: list[list[ModelMessage]] = []

    async def drive() -> None:
        with capture_run_messages() as captured:
            held.append(captured)
            await agent.run("my question", **({"timeout": 60} if how == "timeout" else {}))

    task = asyncio.create_task(drive())
    await reached.wait()
    if how == "task.cancel()":
        task.cancel()
    with pytest.raises((asyncio.CancelledError, RunTimedOut, RuntimeError)) as raised:
        await task

    expected = raised.value.all_messages() if isinstance(raised.value, RunCancelled) else held[0]
    assert shape(await load_messages(alice, conv.id)) == shape(expected)
    assert [(m.role, m.content) for m in await alice.transcript(conv.id)] == [("user", "my question")]
    (history,) = (await alice.get_conversation(conv.id)).histories
    assert (history.status, history.error) == {
        "task.cancel()": ("cancelled", "CancelledError: the task running the agent was cancelled"),
        "timeout": ("cancelled", "RunTimedOut: The agent run timed out."),
        "an error": ("failed", "RuntimeError: retrieval backend down"),
    }[how]


async def _cancelled_at(
    agent: Agent[None, str], reached: asyncio.Event, prompt: str = "go"
) -> list[ModelMessage]:
    """Run ``agent`` in a task of its own, cancel that task (a stop button) once ``reached`` is
    set, and give the messages pydantic-ai holds for the run once it has ended
    (``capture_run_messages()``)."""
    held: list[list[ModelMessage]] = []

    async def drive() -> None:
        with capture_run_messages() as captured:
            held.append(captured)
            await agent.run(prompt)

    task = asyncio.create_task(drive())
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return held[0]


async def test_a_response_arriving_as_the_run_is_cancelled_is_stored_as_pydantic_ai_keeps_it(
    alice: Scope,
) -> None:
    """pydantic-ai runs each step of a run (a model request, the tools a response calls) in a task
    of its own. Cancelling the task running the agent leaves that step running until pydantic-ai
    tears the run down, after the capability's hooks, and the response it then adds is in the
    run's messages. Here the model sees its request through when cancelled (the response was
    already on its way): pydantic-ai keeps that response, and so must the store."""
    conv = await alice.start_conversation()
    requested = asyncio.Event()

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        requested.set()
        with contextlib.suppress(asyncio.CancelledError):  # the response arrives all the same
            await asyncio.Event().wait()
        return ModelResponse(parts=[ToolCallPart(tool_name="lookup", args={}, tool_call_id="call_1")])

    agent = Agent(
        FunctionModel(respond, model_name="fm"), capabilities=[ChatMemoryCapability(alice, conv.id)]
    )

    @agent.tool_plain
    def lookup() -> str:
        return "found"

    held = await _cancelled_at(agent, requested)

    assert [type(m).__name__ for m in held] == ["ModelRequest", "ModelResponse"]
    assert shape(to_model_messages(await alice.transcript(conv.id))) == shape(held)
    (history,) = (await alice.get_conversation(conv.id)).histories
    assert history.status == "cancelled"


async def test_a_request_being_stored_as_the_run_is_cancelled_is_stored_once(
    alice: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request carrying a tool's result is stored by its step's task, before it is sent;
    a run cancelled while that write is under way must not store the request a second time
    when it closes its history (every later run would send the model two results for one
    call). The write is held until pydantic-ai reports the run's error to its capabilities
    (``on_run_error``, before ``wrap_run`` sees it)."""
    conv = await alice.start_conversation()
    written, release = asyncio.Event(), asyncio.Event()
    append = alice.append_messages

    async def append_then_wait(history_id: Any, messages: Any, **kwargs: Any) -> Any:
        stored = await append(history_id, messages, **kwargs)
        if any(message.role == "tool" for message in messages):
            written.set()
            await release.wait()
        return stored

    monkeypatch.setattr(alice, "append_messages", append_then_wait)

    @dataclass
    class ReleaseOnError(AbstractCapability[Any]):
        async def on_run_error(self, ctx: RunContext[Any], *, error: BaseException) -> Any:
            release.set()
            raise error

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart(tool_name="lookup", args={}, tool_call_id="call_1")])
        return ModelResponse(parts=[TextPart("found it")])

    agent = Agent(
        FunctionModel(respond, model_name="fm"),
        capabilities=[ChatMemoryCapability(alice, conv.id), ReleaseOnError()],
    )

    @agent.tool_plain
    def lookup() -> str:
        return "found"

    held = await _cancelled_at(agent, written)

    assert shape(to_model_messages(await alice.transcript(conv.id))) == shape(held)
    assert [m.role for m in await alice.transcript(conv.id)] == ["user", "assistant", "tool"]
    seen: list[list[ModelMessage]] = []

    def record(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(messages)
        return ModelResponse(parts=[TextPart("ok")])

    await Agent(FunctionModel(record), capabilities=[ChatMemoryCapability(alice, conv.id)]).run("and?")
    returns = [p for m in seen[0] for p in m.parts if p.part_kind == "tool-return"]
    assert [p.tool_call_id for p in returns] == ["call_1"]


@pytest.mark.parametrize("hook", ["before_node_run", "after_node_run"])
async def test_a_run_cancelled_just_around_its_tools_step_stores_no_request_after_the_calls(
    alice: Scope, hook: str
) -> None:
    """Cancelled in another capability's ``before_node_run`` of the step that runs a response's
    tools (none has run), or in its ``after_node_run`` (they all returned, but pydantic-ai adds
    their results to the run's messages only with the next request), the run holds the response
    and nothing after it, so the store must too. A run continuing without a prompt
    (``agent.run()``) then runs the tools, as pydantic-ai's own round trip does from
    ``capture_run_messages()``."""
    conv = await alice.start_conversation()
    reached = asyncio.Event()

    @dataclass
    class PausingAtTools(AbstractCapability[Any]):
        async def before_node_run(self, ctx: RunContext[Any], *, node: Any) -> Any:
            if hook == "before_node_run" and isinstance(node, CallToolsNode):
                reached.set()
                await asyncio.Event().wait()  # until the run is stopped
            return node

        async def after_node_run(self, ctx: RunContext[Any], *, node: Any, result: Any) -> Any:
            if hook == "after_node_run" and isinstance(node, CallToolsNode):
                reached.set()
                await asyncio.Event().wait()
            return result

    def agent(*capabilities: AbstractCapability[Any]) -> tuple[Agent[None, str], list[list[ModelMessage]]]:
        seen: list[list[ModelMessage]] = []

        def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            seen.append(list(messages))
            if any(p.part_kind == "tool-return" for p in messages[-1].parts):
                return ModelResponse(parts=[TextPart("done")])
            return ModelResponse(parts=[ToolCallPart(tool_name="lookup", args={}, tool_call_id="call_1")])

        built = Agent(FunctionModel(respond, model_name="fm"), capabilities=list(capabilities))

        @built.tool_plain
        def lookup() -> str:
            return "found"

        return built, seen

    stopped, _ = agent(ChatMemoryCapability(alice, conv.id), PausingAtTools())
    held = await _cancelled_at(stopped, reached)

    assert [type(m).__name__ for m in held] == ["ModelRequest", "ModelResponse"]
    assert shape(to_model_messages(await alice.transcript(conv.id))) == shape(held)
    ours, ours_seen = agent(ChatMemoryCapability(alice, conv.id))
    theirs, theirs_seen = agent()
    await ours.run()
    await theirs.run(message_history=held)
    assert shape(ours_seen[-1]) == shape(theirs_seen[-1])
    assert [getattr(p, "content", None) for p in ours_seen[-1][-1].parts] == ["found"]


async def test_cancelling_a_run_stops_no_step_of_another_run_given_the_same_run_id(alice: Scope) -> None:
    """Two runs of one agent at once, into two conversations, given one ``run_id`` (a request's
    id, say): cancelling one stops its own steps only; the other runs its tool to the end."""
    in_tool = asyncio.Barrier(3)
    finished: list[str] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if isinstance(messages[-1].parts[-1], UserPromptPart):
            return ModelResponse(parts=[ToolCallPart("slow", {}, tool_call_id="c1")])
        return ModelResponse(parts=[TextPart("done")])

    agent = Agent(FunctionModel(model, model_name="fn"))

    @agent.tool_plain
    async def slow() -> str:
        await in_tool.wait()
        await asyncio.sleep(0.2)
        finished.append("slow")
        return "slow result"

    first, second = await alice.start_conversation(), await alice.start_conversation()
    cancelled = asyncio.ensure_future(
        agent.run("go", run_id="request-42", capabilities=[ChatMemoryCapability(alice, first.id)])
    )
    other = asyncio.ensure_future(
        agent.run("go", run_id="request-42", capabilities=[ChatMemoryCapability(alice, second.id)])
    )
    await asyncio.wait_for(in_tool.wait(), 10)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert (await asyncio.wait_for(other, 10)).output == "done"
    assert finished == ["slow"]
    (history,) = (await alice.get_conversation(second.id, messages=True)).histories
    assert (history.status, [m.role for m in history.messages or []]) == (
        "completed",
        ["user", "assistant", "tool", "assistant"],
    )
