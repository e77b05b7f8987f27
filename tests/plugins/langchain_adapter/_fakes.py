"""Offline chat models and tools for the LangChain adapter tests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from pydantic import Field


class FakeChat(GenericFakeChatModel):
    """LangChain's generic fake, named like a real model, accepting tools, remembering what it
    was sent, and streaming tool calls too (the stock fake drops them when streaming)."""

    messages: Iterator[Any]  # replies: AIMessage, str, or an exception to raise
    model_name: str = "fake-a"
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> FakeChat:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(list(messages))
        reply = next(self.messages)
        if isinstance(reply, Exception):
            raise reply
        message = AIMessage(content=reply) if isinstance(reply, str) else reply
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
        assert isinstance(message, AIMessage)
        calls = [
            {
                "name": c["name"],
                "args": _json(c["args"]),
                "id": c["id"],
                "index": i,
                "type": "tool_call_chunk",
            }
            for i, c in enumerate(message.tool_calls)
        ]
        tokens = re.split(r"(\s)", message.text) if message.text else [""]
        for i, token in enumerate(tokens):
            chunk = AIMessageChunk(content=token, id=message.id, tool_call_chunks=calls if i == 0 else [])
            if run_manager:
                run_manager.on_llm_new_token(token, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)


def _json(args: dict[str, Any]) -> str:
    return json.dumps(args)


def fake(*replies: AIMessage | str | Exception, name: str = "fake-a") -> FakeChat:
    """A fake model giving ``replies`` in order (an exception is raised instead of replying)."""
    return FakeChat(messages=iter(replies), model_name=name)


def call(name: str, call_id: str, **args: Any) -> AIMessage:
    """A reply asking for one tool call."""
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}]
    )


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"tool failed: {reason}")
