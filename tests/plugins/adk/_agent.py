"""An ADK agent on an offline model, run through ``Runner``; also a script running one turn.

``python -m tests.plugins.adk._agent URL SESSION_ID MODEL TEXT`` runs one invocation on a
``ChatMemorySessionService.from_url(URL)`` and prints, as JSON, the contents the model saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncGenerator
from typing import Any

from chatmemory_adk import ChatMemorySessionService
from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.plugins.base_plugin import BasePlugin
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import BaseSessionService
from google.genai import types
from pydantic import Field

APP = "calc_app"
USER = "alice"


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def explode() -> int:
    """Fail."""
    raise RuntimeError("boom")


def die() -> int:
    """End this process at once, as a kill would."""
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


async def hang() -> int:
    """Wait for good (until the process is stopped)."""
    await asyncio.Event().wait()
    return 0


class FakeLlm(BaseLlm):
    """Offline model: asked to add, it calls ``add`` (asked to explode, ``explode``; told
    ``die`` or ``hang``, that tool); given the result, it states it; else it says how many
    contents it saw. Unless ``stamp`` is off it reports its own name as the model version, as
    provider models do. Every request's contents are kept in ``seen``."""

    stamp: bool = True
    seen: list[list[dict[str, Any]]] = Field(default_factory=list)

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        contents = llm_request.contents
        self.seen.append([c.model_dump(mode="json", exclude_none=True) for c in contents])
        last = contents[-1].parts or []
        if any(p.function_response for p in last):
            part = types.Part(text="2+3=5")
        elif any(p.text and "add" in p.text for p in last):
            part = types.Part(
                function_call=types.FunctionCall(id="call-1", name="add", args={"a": 2, "b": 3})
            )
        elif any(p.text and "explode" in p.text for p in last):
            part = types.Part(function_call=types.FunctionCall(id="call-2", name="explode", args={}))
        elif any(p.text and p.text in ("die", "hang") for p in last):
            name = next(p.text for p in last if p.text)
            part = types.Part(function_call=types.FunctionCall(id="call-3", name=name, args={}))
        else:
            part = types.Part(text=f"saw {len(contents)} contents")
        yield LlmResponse(
            content=types.Content(role="model", parts=[part]),
            model_version=self.model if self.stamp else None,
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=len(contents),
                candidates_token_count=1,
                total_token_count=len(contents) + 1,
            ),
        )


async def run_turn(
    service: BaseSessionService,
    model: str,
    session_id: str,
    text: str,
    *,
    stamp: bool = True,
    plugins: list[BasePlugin] | None = None,
) -> FakeLlm:
    """One invocation of the ``calc`` agent on ``model``; returns the model with what it saw."""
    llm = FakeLlm(model=model, stamp=stamp)
    agent = LlmAgent(name="calc", model=llm, instruction="You add.", tools=[add, explode, die, hang])
    runner = Runner(app=App(name=APP, root_agent=agent, plugins=plugins or []), session_service=service)
    message = types.Content(role="user", parts=[types.Part(text=text)])
    async for _ in runner.run_async(user_id=USER, session_id=session_id, new_message=message):
        pass
    return llm


async def _main(url: str, session_id: str, model: str, text: str) -> None:
    async with ChatMemorySessionService.from_url(url) as service:
        llm = await run_turn(service, model, session_id, text)
    print(json.dumps(llm.seen[-1]))


if __name__ == "__main__":
    asyncio.run(_main(*sys.argv[1:5]))
