"""pydantic-ai's own OpenAI models with ChatMemoryCapability, on bodies shaped as the OpenAI API
returns them (served in process through ``httpx.MockTransport``): reasoning items, annotated
text, tool calls, cached and reasoning token counts, logprobs, plain and streamed.

A run resumed from the store must send the provider exactly what a run given the first run's
``all_messages()`` sends; priced model names put a ``Decimal`` cost on the usage.
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any

import httpx
import pytest
from chatmemory_pydantic_ai import ChatMemoryCapability
from google import genai
from google.genai import types as genai_types
from pydantic_ai import Agent, models
from pydantic_ai.capabilities import NativeTool
from pydantic_ai.models.google import GoogleModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.native_tools import ImageGenerationTool
from pydantic_ai.providers.google import GoogleProvider
from pydantic_ai.providers.openai import OpenAIProvider

from chatmemory import Conversation
from chatmemory.scope import Scope
from tests.plugins._openai_http import (
    FakeOpenAI,
    chat_completion,
    chat_tool_call,
    function_call,
    message,
    reasoning,
    reset_ids,
    response,
)

# (API, model name asked for, model name the API answers with, whether pydantic-ai prices it)
CASES = [
    ("responses", "gpt-5", "gpt-5-2025-08-07", True),
    ("chat", "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", True),
    ("chat", "my-finetune", "ft:gpt-4.1-mini:acme::abc123", False),
]


def _script(api: str, answered_by: str) -> FakeOpenAI:
    reset_ids()
    if api == "responses":
        return FakeOpenAI(
            response([reasoning(), function_call("add", {"a": 2, "b": 3})], answered_by),
            response([reasoning("It is 5."), message("The sum is 5.")], answered_by),
            response([message("Still 5.")], answered_by),
        )
    return FakeOpenAI(
        chat_completion(answered_by, None, [chat_tool_call("add", {"a": 2, "b": 3})]),
        chat_completion(answered_by, "The sum is 5."),
        chat_completion(answered_by, "Still 5."),
    )


def _agent(api: str, name: str, fake: FakeOpenAI, capabilities: list[Any]) -> Agent[None, str]:
    provider = OpenAIProvider(openai_client=fake.client())
    model = (
        OpenAIResponsesModel(name, provider=provider)
        if api == "responses"
        else OpenAIChatModel(name, provider=provider)
    )
    agent = Agent(model, instructions="Be brief.", capabilities=capabilities)

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return agent


async def _turns(agent: Agent[None, str], stream: bool, *, from_store: bool) -> list[str]:
    outputs: list[str] = []
    history = None
    for prompt in ("What is 2+3?", "And again?"):
        if stream:
            async with agent.run_stream(prompt, message_history=history) as streamed:
                outputs.append(await streamed.get_output())
                messages = streamed.all_messages()
        else:
            result = await agent.run(prompt, message_history=history)
            outputs.append(result.output)
            messages = result.all_messages()
        history = None if from_store else messages
    return outputs


@pytest.mark.parametrize("stream", [False, True], ids=["run", "stream"])
@pytest.mark.parametrize(("api", "name", "answered_by", "priced"), CASES, ids=[c[1] for c in CASES])
async def test_a_run_resumed_from_the_store_sends_what_all_messages_sends(
    alice: Scope, api: str, name: str, answered_by: str, priced: bool, stream: bool
) -> None:
    conv = await alice.start_conversation()
    ours, theirs = _script(api, answered_by), _script(api, answered_by)
    with models.override_allow_model_requests(True):
        recorded = await _turns(
            _agent(api, name, ours, [ChatMemoryCapability(alice, conv.id)]), stream, from_store=True
        )
        kept = await _turns(_agent(api, name, theirs, []), stream, from_store=False)
    assert recorded == kept == ["The sum is 5.", "Still 5."]
    assert len(ours.requests) == 3
    assert ours.requests == theirs.requests

    first, second = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (first.model, first.status, second.status) == (name, "completed", "completed")
    assert [m.role for m in first.messages or ()] == ["user", "assistant", "tool", "assistant"]
    answer = (first.messages or [])[-1]
    assert (answer.model, answer.content) == (answered_by, "The sum is 5.")
    usage = first.usage or {}
    assert (usage["requests"], usage["tool_calls"], usage["cache_read_tokens"]) == (2, 1, 512)
    assert usage["output_reasoning_tokens"] > 0
    # A priced model's cost is stored as a number, per response and per run.
    assert ("cost" in usage) is priced
    if priced:
        assert isinstance(usage["cost"], float) and usage["cost"] > 0
        assert isinstance((answer.usage or {})["cost"], float)


async def test_a_generated_image_larger_than_the_inline_limit_does_not_fail_the_run(alice: Scope) -> None:
    conv = await alice.start_conversation()
    reset_ids()
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(1_500_000)
    generated = {
        "id": "ig_1",
        "type": "image_generation_call",
        "status": "completed",
        "result": base64.b64encode(png).decode(),
        "revised_prompt": "A cat.",
        "background": "opaque",
        "output_format": "png",
        "quality": "high",
        "size": "1024x1024",
    }
    fake = FakeOpenAI(response([generated, message("Here is your cat.")], "gpt-5-2025-08-07"))
    tools = [ChatMemoryCapability(alice, conv.id), NativeTool(ImageGenerationTool())]
    agent = Agent(
        OpenAIResponsesModel("gpt-5", provider=OpenAIProvider(openai_client=fake.client())),
        capabilities=tools,
    )
    with models.override_allow_model_requests(True):
        result = await agent.run("Draw a cat.")
    assert result.output == "Here is your cat."
    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert history.status == "completed"


async def test_an_answer_longer_than_the_content_limit_does_not_fail_the_run(alice: Scope) -> None:
    conv = await alice.start_conversation()
    reset_ids()
    essay = "word " * 24_000
    fake = FakeOpenAI(response([message(essay)], "gpt-5-2025-08-07"))
    agent = Agent(
        OpenAIResponsesModel("gpt-5", provider=OpenAIProvider(openai_client=fake.client())),
        capabilities=[ChatMemoryCapability(alice, conv.id)],
    )
    with models.override_allow_model_requests(True):
        result = await agent.run("Write an essay.")
    assert result.output == essay


def _gemini_body(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {
            "promptTokenCount": 120,
            "candidatesTokenCount": 12,
            "thoughtsTokenCount": 40,
            "cachedContentTokenCount": 64,
            "totalTokenCount": 172,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120}],
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-1",
    }


async def _gemini_turns(alice: Scope, conv: Conversation | None, stream: bool) -> tuple[list[str], list[str]]:
    """Two turns of a GoogleModel agent, recorded in ``conv`` when given (else each run gets the
    first one's ``all_messages()``); the outputs and the request bodies, with the tool call ids
    pydantic-ai makes up (Gemini gives none) numbered in order."""
    signature = base64.b64encode(b"opaque thought signature").decode()
    bodies = [
        _gemini_body(
            [
                {"text": "Adding.", "thought": True, "thoughtSignature": signature},
                {"functionCall": {"name": "add", "args": {"a": 2, "b": 3}}},
            ]
        ),
        _gemini_body([{"text": "The sum is 5."}]),
        _gemini_body([{"text": "Still 5."}]),
    ]
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content.decode())
        body = bodies.pop(0)
        if "streamGenerateContent" in request.url.path:
            events = f"data: {json.dumps(body)}\r\n\r\n".encode()
            return httpx.Response(200, content=events, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = genai.Client(
        api_key="test-not-used", http_options=genai_types.HttpOptions(httpx_async_client=http)
    )
    capabilities = [ChatMemoryCapability(alice, conv.id)] if conv is not None else []
    agent = Agent(
        GoogleModel("gemini-2.5-flash", provider=GoogleProvider(client=client)),
        instructions="Be brief.",
        capabilities=capabilities,
    )

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    with models.override_allow_model_requests(True):
        outputs = await _turns(agent, stream, from_store=conv is not None)
    await http.aclose()
    ids: dict[str, str] = {}
    numbered = [
        re.sub(r"pyd_ai_[0-9a-f]{32}", lambda m: ids.setdefault(m[0], f"call-{len(ids)}"), s) for s in sent
    ]
    return outputs, numbered


@pytest.mark.parametrize("stream", [False, True], ids=["run", "stream"])
async def test_gemini_runs_resumed_from_the_store_send_what_all_messages_sends(
    alice: Scope, stream: bool
) -> None:
    conv = await alice.start_conversation()
    recorded, ours = await _gemini_turns(alice, conv, stream)
    kept, theirs = await _gemini_turns(alice, None, stream)
    assert recorded == kept == ["The sum is 5.", "Still 5."]
    assert len(ours) == 3
    assert ours == theirs
    first, _ = (await alice.get_conversation(conv.id)).histories
    # Output counts the thought tokens, as ChatMemorySessionService records Gemini's usage.
    usage = first.usage or {}
    assert (usage["input_tokens"], usage["output_tokens"], usage["output_reasoning_tokens"]) == (240, 104, 80)
    assert isinstance(usage["cost"], float)
