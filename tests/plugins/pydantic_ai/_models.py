"""Scripted offline models for the pydantic-ai capability tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel


class Script:
    """A FunctionModel that calls ``add(2, 3)`` on a fresh prompt, answers once the tool has
    returned, and remembers every message list it was sent."""

    def __init__(self, name: str, *, tool: bool = True, fail_after_tool: BaseException | None = None) -> None:
        self.received: list[list[ModelMessage]] = []
        self.tool = tool
        self.fail_after_tool = fail_after_tool
        self.model = FunctionModel(self._respond, stream_function=self._stream, model_name=name)

    def _respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.received.append(list(messages))
        last = messages[-1]
        answered = any(p.part_kind == "tool-return" for p in last.parts)
        if answered and self.fail_after_tool is not None:
            raise self.fail_after_tool
        if self.tool and not answered:
            return ModelResponse(
                parts=[ToolCallPart("add", {"a": 2, "b": 3}, tool_call_id=f"call-{len(messages)}")]
            )
        return ModelResponse(parts=[TextPart(f"answer {len(messages)}")])

    async def _stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        self.received.append(list(messages))
        for chunk in ("streamed ", "answer"):
            yield chunk


def adder(model: Any, **kwargs: Any) -> Agent[None, str]:
    """An agent with an ``add`` tool, a system prompt and instructions."""
    agent = Agent(model, system_prompt="You add.", instructions="Be terse.", **kwargs)

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        return a + b

    return agent


def as_json(messages: Sequence[ModelMessage], *, fresh_run: str | None = None) -> list[Any]:
    """JSON of ``messages``; for the run ``fresh_run`` (and requests pydantic-ai merges just
    before sending, which belong to no run), without run id and timestamps."""
    out = ModelMessagesTypeAdapter.dump_python(list(messages), mode="json")
    for message in out:
        if fresh_run is not None and message["run_id"] in (fresh_run, None):
            message["run_id"] = message["timestamp"] = None
            for part in message["parts"]:
                part.pop("timestamp", None)
    return out
