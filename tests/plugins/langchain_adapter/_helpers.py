"""Building agents and reading back what they recorded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from chatmemory_langchain import BackgroundLoop, ChatMemoryMiddleware
from langchain.agents import create_agent
from langchain.agents.middleware.types import AgentMiddleware
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from chatmemory import HistoryDetail, Message
from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import add, explode

SYSTEM = "You add numbers."


def agent(
    chat: Scope,
    conversation_id: UUID | str,
    model: BaseChatModel,
    *,
    before: Sequence[AgentMiddleware[Any, Any, Any]] = (),
    after: Sequence[AgentMiddleware[Any, Any, Any]] = (),
    tools: Sequence[BaseTool] = (add, explode),
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    loop: BackgroundLoop | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """An agent recording into the conversation, after the ``before`` middleware and before
    the ``after`` middleware."""
    return create_agent(
        model,
        list(tools),
        system_prompt=SYSTEM,
        middleware=[*before, ChatMemoryMiddleware(chat, conversation_id, loop=loop), *after],
        checkpointer=checkpointer,
    )


async def histories(chat: Scope, conversation_id: UUID | str) -> list[HistoryDetail]:
    """The conversation's histories, each with its messages."""
    return (await chat.get_conversation(conversation_id, messages=True)).histories


def rows(messages: Sequence[Message] | None) -> list[tuple[str, str | None, str]]:
    """(role, model, content) of each message."""
    return [(m.role, m.model, m.content) for m in messages or []]


def user(text: str, message_id: str | None = None) -> dict[str, Any]:
    """An agent input holding one user message."""
    message: dict[str, Any] = {"role": "user", "content": text}
    if message_id is not None:
        message["id"] = message_id
    return {"messages": [message]}
