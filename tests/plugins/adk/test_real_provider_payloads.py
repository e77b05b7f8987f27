"""ADK's own ``Gemini`` model on Gemini API bodies, served in process through ``httpx.MockTransport``.

The bodies are shaped as ``generateContent`` / ``streamGenerateContent`` return them for a
thinking model: a thought part, thought signatures, grounding metadata, and usage metadata with
``thoughtsTokenCount`` and ``cachedContentTokenCount`` (thought tokens are not in
``candidatesTokenCount``, yet are billed as output and counted in ``totalTokenCount``).
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import httpx
import pytest
from chatmemory_adk import ChatMemorySessionService, ProvenancePlugin, _layout
from google import genai
from google.adk.agents import LlmAgent
from google.adk.agents.run_config import RunConfig, StreamingMode
from google.adk.apps import App
from google.adk.models import Gemini
from google.adk.plugins.base_plugin import BasePlugin
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.adk.sessions.base_session_service import BaseSessionService
from google.genai import types

from chatmemory import ChatMemory
from tests.plugins.adk._agent import APP, USER, add

SIGNATURE = base64.b64encode(b"opaque thought signature").decode()
MODEL = "gemini-2.5-flash"


def _body(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"parts": parts, "role": "model"},
                "finishReason": "STOP",
                "index": 0,
                "avgLogprobs": -0.12,
                "groundingMetadata": {
                    "webSearchQueries": ["2+3"],
                    "groundingChunks": [{"web": {"uri": "https://example.com/sums", "title": "Sums"}}],
                    "groundingSupports": [
                        {
                            "segment": {"startIndex": 0, "endIndex": 4, "text": "2+3="},
                            "groundingChunkIndices": [0],
                            "confidenceScores": [0.9],
                        }
                    ],
                },
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 120,
            "candidatesTokenCount": 12,
            "thoughtsTokenCount": 40,
            "toolUsePromptTokenCount": 8,
            "cachedContentTokenCount": 64,
            "totalTokenCount": 180,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120}],
            "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 64}],
        },
        "modelVersion": MODEL,
        "responseId": "resp-1",
    }


class FakeGemini:
    """Answers a tool call, then its result, then a second prompt; keeps each request body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.bodies = [
            _body(
                [
                    {"text": "Adding with the tool.", "thought": True},
                    {
                        "functionCall": {"name": "add", "args": {"a": 2, "b": 3}},
                        "thoughtSignature": SIGNATURE,
                    },
                ]
            ),
            _body([{"text": "2+3=5", "thoughtSignature": SIGNATURE}]),
            _body([{"text": "Still 5."}]),
        ]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(request.content))
        body = self.bodies.pop(0)
        if "streamGenerateContent" not in request.url.path:
            return httpx.Response(200, json=body)
        chunks = []
        parts = body["candidates"][0]["content"]["parts"]
        for i, part in enumerate(parts):
            chunk = copy.deepcopy(body)
            chunk["candidates"][0]["content"]["parts"] = [part]
            if i < len(parts) - 1:  # earlier chunks: no finish reason, the prompt count only
                del chunk["candidates"][0]["finishReason"]
                chunk["usageMetadata"] = {"promptTokenCount": 120, "totalTokenCount": 120}
            chunks.append(f"data: {json.dumps(chunk)}\r\n\r\n")
        return httpx.Response(
            200, content="".join(chunks).encode(), headers={"content-type": "text/event-stream"}
        )


async def _converse(
    service: BaseSessionService, *, stream: bool, plugins: list[BasePlugin]
) -> list[dict[str, Any]]:
    fake = FakeGemini()
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    client = genai.Client(api_key="test-not-used", http_options=types.HttpOptions(httpx_async_client=http))
    agent = LlmAgent(
        name="calc", model=Gemini(model=MODEL, client=client), instruction="You add.", tools=[add]
    )
    runner = Runner(app=App(name=APP, root_agent=agent, plugins=plugins), session_service=service)
    session = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    config = RunConfig(streaming_mode=StreamingMode.SSE if stream else StreamingMode.NONE)
    for text in ("add 2 and 3", "again?"):
        message = types.Content(role="user", parts=[types.Part(text=text)])
        async for _ in runner.run_async(
            user_id=USER, session_id=session.id, new_message=message, run_config=config
        ):
            pass
    await http.aclose()
    return fake.requests


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
async def test_gemini_turns_send_what_adks_own_service_sends_and_count_thought_tokens(
    service: ChatMemorySessionService, memory: ChatMemory, stream: bool
) -> None:
    ours = await _converse(service, stream=stream, plugins=[ProvenancePlugin(service)])
    theirs = await _converse(InMemorySessionService(), stream=stream, plugins=[])  # type: ignore[no-untyped-call]
    assert len(ours) == 3
    # The second invocation's request carries the first one's thought signatures and tool turn.
    assert ours == theirs

    chat = memory.scoped(_layout.user(APP, USER))
    detail = await chat.get_conversation(_layout.session_id_of(APP, USER, "s1"), messages=True)
    first, second = detail.histories
    # Thought and tool-use prompt tokens are billed: output = candidates + thoughts, and the
    # counts add up to Gemini's total.
    per_call = {
        "input_tokens": 128,
        "output_tokens": 52,
        "total_tokens": 180,
        "cached_tokens": 64,
        "reasoning_tokens": 40,
    }
    assert (first.model, first.status, first.usage) == (
        MODEL,
        "completed",
        {k: 2 * v for k, v in per_call.items()},
    )
    assert (second.status, second.usage) == ("completed", per_call)
    assert [(m.role, m.content) for m in first.messages or []] == [
        ("user", "add 2 and 3"),
        ("assistant", ""),
        ("tool", '{"result": 5}'),
        ("assistant", "2+3=5"),
    ]
    assert [type(p).__name__ for p in first.messages[1].parts or []] == ["ReasoningPart", "ToolCallPart"]  # type: ignore[index]
    assert first.messages[3].usage == per_call  # type: ignore[index]
