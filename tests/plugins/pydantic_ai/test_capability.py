"""ChatMemoryCapability records pydantic-ai runs and resumes conversations, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import anyio
import pytest
from chatmemory_pydantic_ai import NATIVE_FORMAT, ChatMemoryCapability, load_messages
from pydantic import BaseModel
from pydantic_ai import Agent, BinaryContent, ImageUrl, capture_run_messages, models
from pydantic_ai.exceptions import ModelAPIError, UserError
from pydantic_ai.messages import ModelMessage, ModelResponse, ThinkingPart, ToolReturnPart
from pydantic_ai.messages import TextPart as AiTextPart
from pydantic_ai.messages import ToolCallPart as AiToolCallPart
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.usage import RequestUsage

from chatmemory import (
    ChatMemory,
    ConversationNotFound,
    HistoryDetail,
    ImagePart,
    InvalidInputError,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import Script, adder, as_json
from tests.unstorable import too_deep

models.ALLOW_MODEL_REQUESTS = False

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"


async def _histories(chat: Scope, conversation_id: UUID) -> list[HistoryDetail]:
    return (await chat.get_conversation(str(conversation_id), messages=True)).histories


async def test_two_runs_with_different_models_are_two_histories(alice: Scope) -> None:
    conv = await alice.start_conversation("sums")
    first, second = Script("fn-A"), Script("fn-B", tool=False)
    agent = adder(first.model, capabilities=[ChatMemoryCapability(alice, conv.id)])

    one = await agent.run("what is 2+3?")
    two = await agent.run("and again?", model=second.model)

    h1, h2 = await _histories(alice, conv.id)
    assert (h1.model, h2.model) == ("fn-A", "fn-B")
    assert (h1.status, h2.status) == ("completed", "completed")
    assert h1.system_prompts == ["You add.", "Be terse."]
    assert h2.system_prompts == ["You add.", "Be terse."]  # from the reloaded first request
    assert (h1.metadata or {})["run_id"] == one.run_id
    assert (h1.metadata or {})["model_id"] == "function:fn-A"
    assert (h2.metadata or {})["run_id"] == two.run_id
    assert (h1.usage or {})["requests"] == 2
    assert [(m.role, m.model) for m in h1.messages] == [
        ("user", None),
        ("assistant", "fn-A"),
        ("tool", None),
        ("assistant", "fn-A"),
    ]
    assert [(m.role, m.model, m.content) for m in h2.messages] == [
        ("user", None, "and again?"),
        ("assistant", "fn-B", "answer 5"),
    ]
    assert all(m.native is not None and m.native.format == NATIVE_FORMAT for m in h1.messages + h2.messages)
    assert second.received[0][:4] == one.all_messages()


async def test_tool_call_and_result_are_paired_parts(alice: Scope) -> None:
    conv = await alice.start_conversation()
    await adder(Script("fn-A").model, capabilities=[ChatMemoryCapability(alice, conv.id)]).run("2+3?")

    (history,) = await _histories(alice, conv.id)
    user, call, result, answer = history.messages
    assert (user.content, user.parts) == ("2+3?", None)
    (call_part,) = call.parts or []
    assert isinstance(call_part, ToolCallPart)
    assert (call_part.name, call_part.arguments) == ("add", {"a": 2, "b": 3})
    (result_part,) = result.parts or []
    assert isinstance(result_part, ToolResultPart)
    assert (result_part.call_id, result_part.content, result_part.is_error) == (call_part.id, "5", False)
    assert result.content == "5"
    assert answer.content == "answer 3"
    assert (answer.usage or {})["output_tokens"] > 0


async def test_multimodal_input_is_stored_as_parts_and_reloads_exactly(alice: Scope) -> None:
    conv = await alice.start_conversation()
    agent = adder(Script("fn-A", tool=False).model, capabilities=[ChatMemoryCapability(alice, conv.id)])
    prompt = [
        "what is in these?",
        ImageUrl("https://example.com/cat.png"),
        BinaryContent(PNG, media_type="image/png"),
    ]

    result = await agent.run(prompt)

    (history,) = await _histories(alice, conv.id)
    user = history.messages[0]
    assert user.content == "what is in these?"
    text, by_url, inline = user.parts or []
    assert text == TextPart(text="what is in these?")
    assert by_url == ImagePart(url="https://example.com/cat.png")
    assert isinstance(inline, ImagePart)
    assert (inline.media_type, inline.data_size) == ("image/png", len(PNG))
    reloaded = await load_messages(alice, conv.id)
    assert as_json(reloaded) == as_json(result.all_messages())
    assert reloaded[0].parts[1].content[2].data == PNG  # type: ignore[union-attr,index]


async def test_fallback_inside_a_run_records_each_responding_model(alice: Scope) -> None:
    conv = await alice.start_conversation()
    primary = Script("fn-primary", fail_after_tool=ModelAPIError("fn-primary", "overloaded"))
    backup = Script("fn-backup")
    agent = adder(
        FallbackModel(primary.model, backup.model), capabilities=[ChatMemoryCapability(alice, conv.id)]
    )

    await agent.run("2+3?")

    (history,) = await _histories(alice, conv.id)
    assert history.model == "fallback:fn-primary,fn-backup"
    assert (history.metadata or {})["model_id"] == "fallback:function:fn-primary,function:fn-backup"
    assert [(m.role, m.model) for m in history.messages] == [
        ("user", None),
        ("assistant", "fn-primary"),
        ("tool", None),
        ("assistant", "fn-backup"),
    ]


async def test_a_failing_run_is_recorded_as_failed_with_its_messages(alice: Scope) -> None:
    conv = await alice.start_conversation()
    cap = ChatMemoryCapability(alice, conv.id)
    hello = await adder(Script("fn-A", tool=False).model, capabilities=[cap]).run("hello")
    broken = Script("fn-broken", fail_after_tool=RuntimeError("disk on fire"))

    with capture_run_messages() as produced, pytest.raises(RuntimeError, match="disk on fire"):
        await adder(broken.model, capabilities=[cap]).run("2+3?")

    ok, failed = await _histories(alice, conv.id)
    assert ok.status == "completed"
    assert (failed.status, failed.model) == ("failed", "fn-broken")
    assert failed.error == "RuntimeError: disk on fire"
    assert failed.finished_at is not None
    assert [(m.role, m.model) for m in failed.messages] == [
        ("user", None),
        ("assistant", "fn-broken"),
        ("tool", None),
    ]
    assert failed.messages[0].content == "2+3?"

    # The next run resumes from everything the failed run produced, as pydantic-ai would from
    # the messages it captured.
    after, baseline = Script("fn-C", tool=False), Script("fn-C", tool=False)
    ours = await adder(after.model, capabilities=[cap]).run("try again")
    theirs = await adder(baseline.model).run("try again", message_history=produced)
    assert produced[:2] == hello.all_messages()
    assert as_json(after.received[0], fresh_run=ours.run_id) == as_json(
        baseline.received[0], fresh_run=theirs.run_id
    )
    assert len(after.received[0]) == 5


async def test_streamed_runs_are_recorded_like_others(alice: Scope) -> None:
    conv = await alice.start_conversation()
    script = Script("fn-stream", tool=False)
    agent = adder(script.model, capabilities=[ChatMemoryCapability(alice, conv.id)])

    async with agent.run_stream("tell me") as stream:
        text = await stream.get_output()
    async with agent.iter("and more") as run:
        async for _node in run:
            pass
    assert run.result is not None
    async with agent.run_stream_events("events too") as events:
        async for _event in events:
            pass

    first, second, third = await _histories(alice, conv.id)
    assert text == "streamed answer"
    assert [(m.role, m.model, m.content) for m in first.messages] == [
        ("user", None, "tell me"),
        ("assistant", "fn-stream", "streamed answer"),
    ]
    assert (first.status, second.status) == ("completed", "completed")
    assert [m.content for m in second.messages] == ["and more", "answer 3"]
    assert [m.content for m in third.messages] == ["events too", "streamed answer"]
    assert third.status == "completed"
    assert script.received[1][:2] == stream.all_messages()


class City(BaseModel):
    name: str


async def _city(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[DeltaToolCalls]:
    output = info.output_tools[0].name
    yield {0: DeltaToolCall(name=output, json_args='{"name": "Paris"}', tool_call_id="out-1")}


async def _text_and_call(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    yield "Paris"
    yield {1: DeltaToolCall(name="lookup", json_args='{"q": "x"}', tool_call_id="call-1")}


@pytest.mark.parametrize("shape", ["output_tool", "text_and_tool_call"])
async def test_a_streamed_run_whose_final_response_calls_tools_is_stored_with_their_returns(
    shape: str, alice: Scope
) -> None:
    """pydantic-ai answers those calls in a request it adds only to the stream result's messages."""
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    if shape == "output_tool":
        agent: Agent[None, object] = Agent(
            FunctionModel(stream_function=_city, model_name="fn"), capabilities=[capability], output_type=City
        )
    else:
        model = FunctionModel(stream_function=_text_and_call, model_name="fn")
        agent = Agent(model, capabilities=[capability])

        @agent.tool_plain
        def lookup(q: str) -> str:
            return q

    async with agent.run_stream("Capital of France?") as result:
        await result.get_output()
        # Stored once the stream is received, before the run ends: a process killed now keeps them.
        (running,) = await _histories(alice, conv.id)
        assert [m.role for m in running.messages or ()] == ["user", "assistant", "tool"]

    assert as_json(await load_messages(alice, conv.id)) == as_json(result.all_messages())
    assert [h.status for h in await _histories(alice, conv.id)] == ["completed"]
    # The conversation goes on: pydantic-ai refuses a new prompt after unanswered tool calls.
    later = Agent(
        FunctionModel(lambda messages, info: ModelResponse(parts=[AiTextPart("ok")]), model_name="fn"),
        capabilities=[ChatMemoryCapability(alice, conv.id)],
    )
    assert (await later.run("And of Spain?")).output == "ok"


async def test_resume_sends_the_model_what_an_in_memory_history_would(alice: Scope) -> None:
    conv = await alice.start_conversation()
    cap = ChatMemoryCapability(alice, conv.id)
    first = await adder(Script("fn-A").model, capabilities=[cap]).run("2+3?")

    resumed, baseline = Script("fn-B"), Script("fn-B")
    ours = await adder(resumed.model, capabilities=[cap]).run("now 3+4?")
    theirs = await adder(baseline.model).run("now 3+4?", message_history=first.all_messages())

    assert len(resumed.received) == len(baseline.received) == 2
    for got, want in zip(resumed.received, baseline.received, strict=True):
        assert as_json(got, fresh_run=ours.run_id) == as_json(want, fresh_run=theirs.run_id)
    assert resumed.received[0][:4] == first.all_messages()  # tool-call pair intact, lossless
    assert ours.conversation_id == first.conversation_id == str(conv.id)
    assert len(ours.new_messages()) == 4


async def test_passing_message_history_loads_and_records_nothing_twice(alice: Scope) -> None:
    conv = await alice.start_conversation()
    cap = ChatMemoryCapability(alice, conv.id)
    first = await adder(Script("fn-A").model, capabilities=[cap]).run("2+3?")

    script = Script("fn-B", tool=False)
    await adder(script.model, capabilities=[cap]).run("and?", message_history=first.all_messages())

    assert len(script.received[0]) == 5  # 4 given + the new request, nothing loaded on top
    _, h2 = await _histories(alice, conv.id)
    assert [m.role for m in h2.messages] == ["user", "assistant"]
    assert len(await alice.transcript(conv.id)) == 6


async def test_an_agent_level_capability_is_replaced_by_a_run_level_one(alice: Scope) -> None:
    conv = await alice.start_conversation()
    other = await alice.start_conversation()
    agent = adder(Script("fn-A", tool=False).model, capabilities=[ChatMemoryCapability(alice, conv.id)])

    await agent.run("hi", capabilities=[ChatMemoryCapability(alice, other.id)])

    assert await _histories(alice, conv.id) == []
    assert len(await _histories(alice, other.id)) == 1


async def test_another_principal_cannot_record_into_or_load_a_conversation(alice: Scope, bob: Scope) -> None:
    conv = await alice.start_conversation()
    first = await adder(Script("fn-A").model, capabilities=[ChatMemoryCapability(alice, conv.id)]).run("2+3?")
    script = Script("fn-bob", tool=False)
    agent = adder(script.model, capabilities=[ChatMemoryCapability(bob, conv.id)])

    with pytest.raises(ConversationNotFound):
        await agent.run("show me alice's chat")
    with pytest.raises(ConversationNotFound):
        await agent.run("and now?", message_history=first.all_messages())

    assert script.received == []
    assert len(await _histories(alice, conv.id)) == 1


async def test_messages_from_another_writer_reload_from_their_parts(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="other-model")
    await alice.append_messages(
        run.id,
        [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [ToolCallPart(id="c1", name="weather", arguments={"city": "Oslo"})],
            },
            {"role": "tool", "content": [ToolResultPart(call_id="c1", content="rainy")]},
            {
                "role": "assistant",
                "content": [ToolCallPart(id="c2", name="weather", arguments={"city": "Atlantis"})],
            },
            {
                "role": "tool",
                "content": [ToolResultPart(call_id="c2", content="no such city", is_error=True)],
            },
            {"role": "assistant", "content": "It is rainy."},
        ],
    )
    await alice.finish_history(run.id)

    loaded = await load_messages(alice, conv.id)
    failed = loaded.pop(4).parts[0]  # a failed call is one to the model too (providers flag it)
    assert isinstance(failed, ToolReturnPart)
    assert (failed.tool_call_id, failed.content, failed.outcome) == ("c2", "no such city", "failed")
    del loaded[3]

    assert [m.kind for m in loaded] == ["request", "response", "request", "response"]
    assert isinstance(loaded[3], ModelResponse)
    assert loaded[3].model_name == "other-model"
    tool_return = loaded[2].parts[0]
    assert isinstance(tool_return, ToolReturnPart)
    assert (tool_return.tool_name, tool_return.tool_call_id) == ("weather", "c1")
    assert (tool_return.content, tool_return.outcome) == ("rainy", "success")
    script = Script("fn-A", tool=False)
    await adder(script.model, capabilities=[ChatMemoryCapability(alice, conv.id)]).run("thanks")
    assert len(script.received[0]) == 7


async def test_a_cancelled_run_is_recorded_as_cancelled(alice: Scope) -> None:
    conv = await alice.start_conversation()
    started = asyncio.Event()

    async def hang(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    cap = ChatMemoryCapability(alice, conv.id)
    agent = adder(FunctionModel(hang, model_name="fn-slow"), capabilities=[cap])
    task = asyncio.create_task(agent.run("take your time"))
    # The run reaches the model, or fails before it: then say why rather than wait for it.
    await asyncio.wait({task, asyncio.ensure_future(started.wait())}, return_when=asyncio.FIRST_COMPLETED)
    assert not task.done(), task.result()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A cancelled anyio scope cancels every await inside it, the recording's too unless shielded.
    started.clear()
    async with anyio.create_task_group() as group:

        async def cancel_once_started() -> None:
            await started.wait()
            group.cancel_scope.cancel()

        group.start_soon(cancel_once_started)
        await agent.run("still there?")

    first, second = await _histories(alice, conv.id)
    assert (first.status, second.status) == ("cancelled", "cancelled")
    assert first.error == "CancelledError: the task running the agent was cancelled"
    assert [(m.role, m.content) for m in first.messages] == [("user", "take your time")]
    assert [(m.role, m.content) for m in second.messages] == [("user", "still there?")]


async def test_a_run_the_store_rejects_raises_and_leaves_no_running_history(alice: Scope) -> None:
    conv = await alice.start_conversation()
    agent = adder(Script("fn-A", tool=False).model, capabilities=[ChatMemoryCapability(alice, conv.id)])
    refused = ImageUrl("https://example.com/cat.png", vendor_metadata={"trace": too_deep()})

    with pytest.raises(InvalidInputError, match="nested deeper"):
        await agent.run(["look", refused])

    (history,) = await _histories(alice, conv.id)
    assert history.status == "failed"
    assert (history.error or "").startswith("messages not recorded: ")
    assert history.messages == []


async def test_every_part_kind_committed_mid_run_reloads_exactly(alice: Scope) -> None:
    """What is committed while the run goes equals what pydantic-ai keeps when it ends (as in
    pydantic/pydantic-ai ``tests/test_messages.py``: the TypeAdapter round trip of a history)."""
    conv = await alice.start_conversation()

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(
                parts=[
                    ThinkingPart("adding", signature="sig-1"),
                    AiToolCallPart("add", {"a": 2, "b": 3}, tool_call_id="c-1"),
                ],
                usage=RequestUsage(input_tokens=7, output_tokens=3, details={"reasoning_tokens": 2}),
                provider_name="fake-provider",
                provider_details={"region": "eu"},
                finish_reason="tool_call",
            )
        return ModelResponse(parts=[AiTextPart("5")], usage=RequestUsage(input_tokens=9, output_tokens=1))

    agent = adder(
        FunctionModel(respond, model_name="fn-parts"), capabilities=[ChatMemoryCapability(alice, conv.id)]
    )
    result = await agent.run(["sum", BinaryContent(PNG, media_type="image/png")])

    assert as_json(await load_messages(alice, conv.id)) == as_json(result.all_messages())


async def test_a_priced_run_records_its_cost(alice: Scope) -> None:
    # pydantic-ai prices a response of a model it knows (say "gpt-5") as a Decimal cost.
    def priced(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            call = AiToolCallPart("add", {"a": 2, "b": 3}, tool_call_id="call-1")
            return ModelResponse(parts=[call], usage=RequestUsage(input_tokens=10, output_tokens=2))
        return ModelResponse(parts=[AiTextPart("5")], usage=RequestUsage(input_tokens=20, output_tokens=1))

    conv = await alice.start_conversation("priced")
    model = FunctionModel(priced, model_name="gpt-5")
    agent = adder(model, capabilities=[ChatMemoryCapability(alice, conv.id)])
    result = await agent.run("what is 2+3?")

    (history,) = await _histories(alice, conv.id)
    assert history.status == "completed"
    cost = result.usage.cost
    assert cost, "pydantic-ai no longer prices gpt-5 responses"
    assert (history.usage or {})["cost"] == pytest.approx(float(cost))
    answers = [m for m in history.messages if m.role == "assistant"]
    assert all(isinstance((m.usage or {}).get("cost"), float) for m in answers)


async def test_a_run_id_already_in_the_stored_conversation_is_refused_before_anything_is_written(
    alice: Scope,
) -> None:
    """pydantic-ai refuses a ``run_id`` already in the ``message_history`` it is given (a failed
    run retried under its id): loaded from the store, that run's messages would be taken for
    the retry's own and recorded a second time."""
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    failing = Script("fn-A", fail_after_tool=RuntimeError("model down"))
    with pytest.raises(RuntimeError, match="model down"):
        await adder(failing.model, capabilities=[capability]).run("2+3?", run_id="job-1")
    stored = await alice.transcript(conv.id)

    retry = Script("fn-A")
    with pytest.raises(UserError, match="run_id='job-1'"):
        await adder(retry.model, capabilities=[capability]).run("2+3?", run_id="job-1")

    assert retry.received == []
    assert await alice.transcript(conv.id) == stored
    await adder(retry.model, capabilities=[capability]).run("2+3?", run_id="job-2")
    assert len(await alice.transcript(conv.id)) == len(stored) + 4


async def test_a_capability_with_an_id_of_its_own_mirrors_each_run_into_a_second_conversation(
    alice: Scope,
) -> None:
    main, mirror = await alice.start_conversation(), await alice.start_conversation()
    script = Script("fn-A")
    capabilities = [
        ChatMemoryCapability(alice, main.id),
        ChatMemoryCapability(alice, mirror.id, id="mirror", autoload=False),
    ]
    agent = adder(script.model, capabilities=capabilities)
    await agent.run("2+3?")
    await agent.run("again?")

    stored = [[(m.role, m.content) for m in await alice.transcript(c.id)] for c in (main, mirror)]
    assert stored[0] == stored[1]
    assert [role for role, _ in stored[0]] == ["user", "assistant", "tool", "assistant"] * 2
    assert len(script.received[-1]) == 7  # the second run resumed from the main conversation once


async def test_two_capabilities_sharing_an_id_but_not_a_conversation_are_refused(
    memory: ChatMemory, alice: Scope, bob: Scope, tmp_path: Path
) -> None:
    """pydantic-ai keeps one capability per id: without its own id, the second conversation
    would silently record nothing, so the agent is refused when it is made."""
    main, mirror = await alice.start_conversation(), await alice.start_conversation()
    script = Script("fn-A")
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'backup.db'}") as backup:
        elsewhere = backup.scoped(alice.principal)  # the same principal and id, another store
        for second in (
            ChatMemoryCapability(alice, mirror.id),
            ChatMemoryCapability(bob, main.id),
            ChatMemoryCapability(elsewhere, main.id),
        ):
            with pytest.raises(UserError, match="its own `id=`"):
                adder(script.model, capabilities=[ChatMemoryCapability(alice, main.id), second])
    # The same conversation stated twice, however its id is written, is one capability: each
    # run is recorded once.
    again = ChatMemoryCapability(memory.scoped(alice.principal), str(main.id).upper())
    twice = [ChatMemoryCapability(alice, main.id), again]
    await adder(script.model, capabilities=twice).run("2+3?")
    assert len((await alice.get_conversation(main.id)).histories) == 1
    assert await alice.transcript(mirror.id) == []
