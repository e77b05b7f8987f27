"""Inputs pydantic-ai takes as they are but the store would refuse: a run is recorded all the
same, never failed by its capability."""

from __future__ import annotations

from typing import Any

import pytest
from chatmemory_pydantic_ai import ChatMemoryCapability, load_messages
from pydantic_ai import Agent, ToolReturn, models
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.function import AgentInfo, FunctionModel

from chatmemory import ChatMemory, Limits, Principal
from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import Script, adder

models.ALLOW_MODEL_REQUESTS = False

MANY = 1_500  # over the store's default of 1,000 messages per append call
# A model served from a long local path (vLLM serves a model under the path it was loaded from).
LONG_MODEL = "/mnt/models/hub/" + "/".join(["org--" + "a" * 90, "snapshots", "b" * 80, "Llama-3.1-8B"])
LABEL = LONG_MODEL[:99] + "…" + LONG_MODEL[-100:]


async def test_a_model_name_longer_than_the_store_takes_is_recorded_shortened(alice: Scope) -> None:
    conv = await alice.start_conversation()
    script = Script(LONG_MODEL)
    agent = adder(script.model, capabilities=[ChatMemoryCapability(alice, conv.id)])

    result = await agent.run("what is 2+3?")

    assert result.output == "answer 3"
    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (history.model, history.status, len(LABEL)) == (LABEL, "completed", 200)
    assert [m.model for m in history.messages or [] if m.role == "assistant"] == [LABEL, LABEL]
    # The name itself stays in the messages' native form, as pydantic-ai gave it.
    reloaded = await load_messages(alice, conv.id)
    assert reloaded == result.all_messages()


async def test_a_run_given_a_history_longer_than_one_append_holds(alice: Scope) -> None:
    conv = await alice.start_conversation()
    given: list[ModelMessage] = []
    for i in range(MANY // 2):
        given += [ModelRequest(parts=[UserPromptPart(f"q{i}")]), ModelResponse(parts=[TextPart(f"a{i}")])]
    script = Script("fn-A", tool=False)
    agent = adder(script.model, capabilities=[ChatMemoryCapability(alice, conv.id)])

    result = await agent.run("and now?", message_history=given)

    assert result.output == f"answer {MANY + 1}"
    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (history.status, len(history.messages or [])) == ("completed", 2)


async def test_a_run_id_longer_than_a_key_may_be(alice: Scope) -> None:
    # DBOS names a run after its workflow (``{workflow_id}:{step}``), and workflow ids are the
    # caller's own (an idempotency key, say): pydantic-ai takes a run id of any length.
    run_id = "wf-" + "k" * 300 + ":1"
    conv = await alice.start_conversation()
    agent = adder(Script("fn-A").model, capabilities=[ChatMemoryCapability(alice, conv.id)])

    result = await agent.run("what is 2+3?", run_id=run_id)

    assert result.output == "answer 3"
    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (history.status, len(history.messages or [])) == ("completed", 4)
    assert (history.metadata or {})["run_id"] == run_id
    assert await load_messages(alice, conv.id) == result.all_messages()


async def test_a_fallback_over_models_with_long_names(alice: Scope) -> None:
    # A FallbackModel is named after all its models: three inference-profile ARNs are over 200.
    arns = [
        f"arn:aws:bedrock:{region}:123456789012:application-inference-profile/{'p' * 40}"
        for region in ("us-east-1", "us-west-2", "eu-central-1")
    ]
    conv = await alice.start_conversation()
    scripts = [Script(arn) for arn in arns]
    agent = adder(
        FallbackModel(*(s.model for s in scripts)), capabilities=[ChatMemoryCapability(alice, conv.id)]
    )

    assert (await agent.run("what is 2+3?")).output == "answer 3"

    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    name = "fallback:" + ",".join(arns)
    assert len(name) > 200
    assert (history.model, history.status) == (name[:99] + "…" + name[-100:], "completed")
    assert [m.model for m in history.messages or [] if m.role == "assistant"] == [arns[0], arns[0]]


def dom(depth: int) -> Any:
    """A page's element tree as a browsing tool returns it: each element's children in a list."""
    tree: Any = {"tag": "span", "text": "5"}
    for level in range(depth):
        tree = {"tag": f"div{level}", "children": [tree]}
    return tree


async def test_a_tool_result_nested_as_deep_as_a_page_s_element_tree_is_recorded(alice: Scope) -> None:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("page", {}, tool_call_id="c1")])
        return ModelResponse(parts=[TextPart("It says 5.")])

    conv = await alice.start_conversation()
    agent = Agent(FunctionModel(respond), capabilities=[ChatMemoryCapability(alice, conv.id)])

    @agent.tool_plain
    def page() -> Any:
        return dom(50)  # 100 levels of JSON

    result = await agent.run("What does the page say?")

    assert result.output == "It says 5."
    assert await load_messages(alice, conv.id) == result.all_messages()


async def test_a_tool_result_neither_backend_can_hold_as_text_is_recorded_with_replacements(
    alice: Scope,
) -> None:
    # A zip's first bytes read as text, and a file name decoded with surrogateescape: no database
    # column of text holds a NUL character or a lone surrogate; U+FFFD stands in for each.
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("read_file", {}, tool_call_id="c1")])
        return ModelResponse(parts=[TextPart("A zip.")])

    conv = await alice.start_conversation()
    agent = Agent(FunctionModel(respond), capabilities=[ChatMemoryCapability(alice, conv.id)])

    @agent.tool_plain
    def read_file() -> str:
        return "PK\x03\x04\x00\x00 caf\udce9.txt"

    result = await agent.run("What is it?")

    assert result.output == "A zip."
    reloaded = await load_messages(alice, conv.id)
    (returned,) = [p for m in reloaded for p in m.parts if isinstance(p, ToolReturnPart)]
    assert returned.content == "PK\x03\x04\ufffd\ufffd caf\ufffd.txt"


async def test_reads_fit_a_lower_cap_on_a_page(db_url: str) -> None:
    async with ChatMemory.open(db_url, limits=Limits(list_limit=5)) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        capability = ChatMemoryCapability(chat, conv.id)
        agent = adder(Script("fn-A", tool=False).model, capabilities=[capability])
        for question in ("q1", "q2", "q3"):
            await agent.run(question)

        histories = (await chat.get_conversation(conv.id, messages=True)).histories
        assert [(h.status, len(h.messages or [])) for h in histories] == [("completed", 2)] * 3


async def test_a_run_failing_on_a_store_with_a_lower_content_limit(db_url: str) -> None:
    # The error a failed run records is cut to the store's content limit when that is lower than
    # the adapter's own cut (10,000 characters): the history is closed, not left running.
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart("explode", {}, tool_call_id="c1")])

    async with ChatMemory.open(db_url, limits=Limits(content=5_000)) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        agent = Agent(FunctionModel(respond), capabilities=[ChatMemoryCapability(chat, conv.id)])

        @agent.tool_plain
        def explode() -> str:
            raise RuntimeError("boom " + "x" * 20_000)

        with pytest.raises(RuntimeError, match="boom x"):
            await agent.run("Go.")
        (history,) = (await chat.get_conversation(conv.id)).histories
        assert history.status == "failed"
        assert history.error is not None and history.error.startswith("RuntimeError: boom x")
        assert len(history.error) == 5_000


class _Frame:
    """An object JSON cannot hold, as a tool may keep beside its result."""


async def test_a_tool_return_whose_metadata_json_cannot_hold_is_recorded_and_the_run_completes(
    alice: Scope,
) -> None:
    """pydantic-ai never sends a ``ToolReturn``'s metadata to the model and keeps any object
    there: the run completes as it does without the capability, the object kept as its repr."""
    conv = await alice.start_conversation()

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("query", {}, tool_call_id="q1")])
        return ModelResponse(parts=[TextPart("done")])

    agent = Agent(
        FunctionModel(respond, model_name="fm"), capabilities=[ChatMemoryCapability(alice, conv.id)]
    )

    @agent.tool_plain
    def query() -> ToolReturn:
        return ToolReturn(return_value="42 rows", metadata={"frame": _Frame()})

    assert (await agent.run("go")).output == "done"
    (run,) = (await alice.get_conversation(conv.id)).histories
    assert run.status == "completed"
    (request,) = [m for m in await load_messages(alice, conv.id) if isinstance(m, ModelRequest)][1:]
    (returned,) = request.parts
    assert isinstance(returned, ToolReturnPart)
    assert returned.content == "42 rows"
    assert returned.metadata is not None
    assert returned.metadata["frame"].startswith(f"<{_Frame.__module__}._Frame object at ")
