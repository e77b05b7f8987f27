"""An offline LlamaIndex LLM that names its model, for agent runs in tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import LLMMetadata, ToolCallBlock
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.llms.mock import MockFunctionCallingLLM
from pydantic import Field


class NamedMockLLM(MockFunctionCallingLLM):
    """LlamaIndex's own mock function-calling LLM, reporting ``model_name`` (the stock mock
    reports ``"unknown"``). It calls ``add(2, 3)`` when offered the tool and not yet answered,
    answers a tool result with ``"2+3=5"``, and otherwise says how many messages it saw."""

    model_name: str = "mock"
    seen: list[list[ChatMessage]] = Field(default_factory=list, exclude=True)

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(response_generator=self._respond, is_chat_model=True, **kwargs)
        self.model_name = model_name

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_function_calling_model=True, is_chat_model=True, model_name=self.model_name)

    def _respond(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self.seen.append(list(messages))
        last = messages[-1]
        if last.role == MessageRole.TOOL:
            return ChatMessage(role="assistant", content="2+3=5")
        tools = kwargs.get("tools") or []
        if any(t.metadata.name == "add" for t in tools) and "add" in (last.content or ""):
            call = ToolCallBlock(tool_call_id="call-1", tool_name="add", tool_kwargs={"a": 2, "b": 3})
            return ChatMessage(role="assistant", blocks=[call])
        return ChatMessage(role="assistant", content=f"saw {len(messages)} messages")


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b
