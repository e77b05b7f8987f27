"""ChatMemoryMiddleware with replies shaped as provider integrations build them (usage and
token details, logprobs, refusals, structured output, content blocks with citations,
thinking and tool use): each run is recorded, and the next run's model receives each reply
as it was produced, as it would from a graph that kept the conversation in memory."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from chatmemory import ReasoningPart, TextPart, ToolCallPart
from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import call, fake
from tests.plugins.langchain_adapter._helpers import agent, histories, user


class Answer(BaseModel):
    value: int


def openai_reply(**metadata: Any) -> AIMessage:
    """A reply as langchain-openai builds one for a structured-output request."""
    return AIMessage(
        content='{"value": 4}',
        additional_kwargs={"parsed": Answer(value=4), "refusal": None},
        response_metadata={
            "token_usage": {
                "completion_tokens": 30,
                "prompt_tokens": 12,
                "total_tokens": 42,
                "completion_tokens_details": {"reasoning_tokens": 20, "audio_tokens": 0},
                "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
            },
            "model_name": "gpt-4o-2024-08-06",
            "system_fingerprint": "fp_50cad350e4",
            "id": "chatcmpl-B1",
            "service_tier": "default",
            "finish_reason": "stop",
            "logprobs": {"content": [{"token": "4", "bytes": [52], "logprob": -0.0001, "top_logprobs": []}]},
            **metadata,
        },
        usage_metadata={
            "input_tokens": 12,
            "output_tokens": 30,
            "total_tokens": 42,
            "input_token_details": {"cache_read": 8, "audio": 0},
            "output_token_details": {"reasoning": 20, "audio": 0},
        },
        id="lc_run--0f6f2c1e-0001",
    )


def anthropic_reply() -> AIMessage:
    """A reply as langchain-anthropic builds one: thinking, cited text and a tool_use block."""
    return AIMessage(
        content=[
            {"type": "thinking", "thinking": "Two numbers to add.", "signature": "EqQBCkYIARgCIkB"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va"},
            {
                "type": "text",
                "text": "Adding them.",
                "citations": [{"type": "char_location", "cited_text": "2", "document_index": 0}],
            },
        ],
        response_metadata={
            "id": "msg_01",
            "model_name": "claude-sonnet-4-20250514",
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 0},
        },
        usage_metadata={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_token_details": {"cache_read": 0, "cache_creation": 0},
        },
        id="run-3d1c2b7a-0001",
    )


async def next_call_sees(alice: Scope, reply: AIMessage) -> tuple[Any, BaseMessage]:
    """Record a run answered by ``reply``; the run's history and that reply as the model
    of the next run receives it."""
    conv = await alice.start_conversation()
    await agent(alice, conv.id, fake(reply.model_copy(deep=True))).ainvoke(user("2+2?"))
    later = fake("Again.")
    await agent(alice, conv.id, later).ainvoke(user("Once more?"))
    (run, _) = await histories(alice, conv.id)
    (seen,) = [m for m in later.seen[0] if m.id == reply.id]
    return run, seen


async def test_an_openai_reply_with_usage_details_and_logprobs_comes_back_as_it_was(alice: Scope) -> None:
    reply = openai_reply()
    run, seen = await next_call_sees(alice, reply)
    assert run.status == "completed"
    assert run.usage == {"input_tokens": 12, "output_tokens": 30, "total_tokens": 42}
    assert run.messages is not None
    assert run.messages[-1].usage == reply.usage_metadata
    assert run.messages[-1].model == "gpt-4o-2024-08-06"
    # The parsed structured output has no JSON form of its own: it comes back as its fields.
    assert seen.additional_kwargs == {"parsed": {"value": 4}, "refusal": None}
    assert seen.model_copy(update={"additional_kwargs": reply.additional_kwargs}) == reply


async def test_an_anthropic_reply_with_thinking_and_citations_comes_back_as_it_was(alice: Scope) -> None:
    reply = anthropic_reply()
    run, seen = await next_call_sees(alice, reply)
    assert run.status == "completed"
    assert seen == reply
    assert run.messages is not None
    assert [p.type for p in run.messages[-1].parts or []] == ["reasoning", "text"]


async def test_a_reply_whose_logprobs_hold_infinity_or_nan_is_recorded(alice: Scope) -> None:
    # OpenAI-compatible servers report a token the model could not have picked with a
    # logprob of -inf (JSON's -Infinity, which Python's json reads): no JSON form, so it is
    # kept as null, as LlamaIndex's and pydantic's JSON forms keep it.
    logprobs = {"content": [{"token": "4", "logprob": float("-inf"), "top_logprobs": []}]}
    reply = openai_reply(logprobs=logprobs, score=float("nan"))
    run, seen = await next_call_sees(alice, reply)
    assert run.status == "completed"
    assert seen.response_metadata["logprobs"] == {
        "content": [{"token": "4", "logprob": None, "top_logprobs": []}]
    }
    assert seen.response_metadata["score"] is None


@tool
def scale(x: float) -> str:
    """Scale a number."""
    return f"scaled {x}"


async def test_a_tool_call_whose_arguments_hold_nan_is_recorded(alice: Scope) -> None:
    # langchain-openai reads a call's arguments with json.loads, which takes NaN and
    # Infinity: the call is kept with null in their place, as in the message's native form.
    conv = await alice.start_conversation()
    model = fake(call("scale", "c1", x=json.loads("NaN")), "Done.")
    out = await agent(alice, conv.id, model, tools=[scale]).ainvoke(user("Scale it"))
    assert out["messages"][2].text == "scaled nan"

    (run,) = await histories(alice, conv.id)
    assert run.status == "completed"
    assert run.messages is not None
    assert run.messages[1].parts == [ToolCallPart(id="c1", name="scale", arguments={"x": None})]


async def test_a_responses_api_reply_keeps_its_reasoning_summary_in_its_parts(alice: Scope) -> None:
    # langchain-openai's Responses API output: the reasoning's text is in its summaries.
    reply = AIMessage(
        content=[
            {
                "type": "reasoning",
                "id": "rs_68a1",
                "summary": [
                    {"type": "summary_text", "text": "Two and two.", "index": 0},
                    {"type": "summary_text", "text": "That is four.", "index": 1},
                ],
                "encrypted_content": "gAAAAABo",
            },
            {"type": "text", "text": "4", "annotations": [], "id": "msg_68a1"},
        ],
        response_metadata={"model_name": "o4-mini-2025-04-16", "status": "completed"},
        id="resp_68a1",
    )
    run, seen = await next_call_sees(alice, reply)
    assert seen == reply
    assert run.messages is not None
    assert run.messages[-1].parts == [
        ReasoningPart(text="Two and two.\n\nThat is four."),
        TextPart(text="4"),
    ]


async def test_an_empty_text_block_beside_a_tool_call_is_no_part(alice: Scope) -> None:
    # A streamed Anthropic reply that only calls a tool: Anthropic refuses an empty text
    # block, which a reader of the parts would send back.
    reply = AIMessage(
        content=[
            {"type": "text", "text": "", "index": 0},
            {"type": "tool_use", "id": "toolu_01", "name": "add", "input": {}, "index": 1},
        ],
        tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "toolu_01", "type": "tool_call"}],
        id="lc_run--9b1e",
    )
    conv = await alice.start_conversation()
    await agent(alice, conv.id, fake(reply, "3")).ainvoke(user("1+2?"))
    (run,) = await histories(alice, conv.id)
    assert run.messages is not None
    assert run.messages[1].parts == [ToolCallPart(id="toolu_01", name="add", arguments={"a": 1, "b": 2})]


async def test_a_user_image_larger_than_the_inline_limit_does_not_fail_the_run(alice: Scope) -> None:
    photo = base64.b64encode(b"\xff\xd8\xff\xe0" + os.urandom(1_500_000)).decode()
    question = HumanMessage(
        content=[
            {"type": "text", "text": "What is in this photo?"},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{photo}"}},
        ]
    )
    conv = await alice.start_conversation()
    out = await agent(alice, conv.id, fake("A cat.")).ainvoke({"messages": [question]})
    assert out["messages"][-1].text == "A cat."


async def test_an_answer_longer_than_the_content_limit_does_not_fail_the_run(alice: Scope) -> None:
    essay = "word " * 24_000
    conv = await alice.start_conversation()
    out = await agent(alice, conv.id, fake(essay)).ainvoke(user("Write an essay."))
    assert out["messages"][-1].text == essay


async def test_reasoning_kept_outside_standard_blocks_is_a_reasoning_part(alice: Scope) -> None:
    deepseek = AIMessage(
        content="4",
        additional_kwargs={"reasoning_content": "Two and two."},
        response_metadata={"model_name": "deepseek-reasoner"},
        id="run-ds",
    )
    bedrock = AIMessage(
        content=[
            {"type": "reasoning_content", "reasoning_content": {"text": "Two more.", "signature": "sig"}},
            {"type": "text", "text": "6"},
        ],
        response_metadata={"model_name": "us.anthropic.claude-sonnet-4-20250514-v1:0"},
        id="run-br",
    )
    conv = await alice.start_conversation()
    await agent(alice, conv.id, fake(deepseek)).ainvoke(user("2+2?"))
    await agent(alice, conv.id, fake(bedrock)).ainvoke(user("And +2?"))
    first, second = await histories(alice, conv.id)
    assert first.messages is not None and second.messages is not None
    assert first.messages[-1].parts == [ReasoningPart(text="Two and two."), TextPart(text="4")]
    assert second.messages[-1].parts == [ReasoningPart(text="Two more."), TextPart(text="6")]
