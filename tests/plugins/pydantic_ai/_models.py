"""Scripted offline models for the pydantic-ai capability tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from chatmemory_pydantic_ai import ChatMemoryCapability, load_messages
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from chatmemory.scope import Scope


class Script:
    """A FunctionModel that calls ``add(2, 3)`` on a fresh prompt, answers once the tool has
    returned, and remembers every message list it was sent. ``before_answer`` is called (on a
    worker thread) before it answers a prompt whose tool has returned."""

    def __init__(
        self,
        name: str,
        *,
        tool: bool = True,
        fail_after_tool: BaseException | None = None,
        before_answer: Callable[[], None] | None = None,
    ) -> None:
        self.received: list[list[ModelMessage]] = []
        self.tool = tool
        self.fail_after_tool = fail_after_tool
        self.before_answer = before_answer
        self.model = FunctionModel(self._respond, stream_function=self._stream, model_name=name)

    def _respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        answered = _answered(messages)
        if answered and self.before_answer is not None:
            self.before_answer()
        self.received.append(list(messages))
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


def _answered(messages: Sequence[ModelMessage]) -> bool:
    """Whether a tool has returned since the newest prompt: the run's own, sent last. A run's first
    request also carries the tool results a run still in progress in the same conversation stored
    last (pydantic-ai merges the requests that end its history with the new one); those answer
    that run's prompt, not this one."""
    kinds = [part.part_kind for message in messages for part in message.parts]
    asked = max((i for i, kind in enumerate(kinds) if kind == "user-prompt"), default=-1)
    return "tool-return" in kinds[asked + 1 :]


def adder(model: Any, *, in_tool: Callable[[], None] | None = None, **kwargs: Any) -> Agent[None, str]:
    """An agent with an ``add`` tool, a system prompt and instructions; ``in_tool`` is called by
    the tool (on a worker thread) before it returns."""
    agent = Agent(model, system_prompt="You add.", instructions="Be terse.", **kwargs)

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        if in_tool is not None:
            in_tool()
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


async def resumed_and_read(
    chat: Scope, conversation_id: Any, capability: ChatMemoryCapability
) -> tuple[list[Any], list[Any]]:
    """JSON of what a new run of ``capability`` resumes from, and of what a fresh read of the
    conversation gives, as each is sent to the model (without the new prompt)."""
    later, fresh = Script("fn-B", tool=False), Script("fn-B", tool=False)
    await adder(fresh.model).run("total?", message_history=await load_messages(chat, conversation_id))
    await adder(later.model, capabilities=[capability]).run("total?")
    return as_json(later.received[0][:-1]), as_json(fresh.received[0][:-1])


def shape(messages: Sequence[ModelMessage]) -> Any:
    """Messages as JSON without what differs between two equivalent runs (times, run ids)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            skip = ("timestamp", "run_id", "conversation_id")
            return {k: strip(v) for k, v in value.items() if k not in skip}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(ModelMessagesTypeAdapter.dump_python(list(messages), mode="json"))
