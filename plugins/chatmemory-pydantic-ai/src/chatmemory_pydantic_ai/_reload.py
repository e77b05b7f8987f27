"""chatmemory messages back to pydantic-ai messages."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from uuid import UUID

from pydantic_ai import messages as pai

from chatmemory import (
    AudioPart,
    FilePart,
    ImagePart,
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.scope import Scope
from chatmemory_pydantic_ai._convert import NATIVE_FORMAT

__all__ = ["load_messages", "to_model_messages"]


async def load_messages(chat: Scope, conversation_id: UUID | str) -> list[pai.ModelMessage]:
    """A conversation as the ``message_history`` pydantic-ai would have kept in memory.

    Only completed histories count: a failed or cancelled run leaves no result in pydantic-ai
    either, and its last response may hold tool calls that were never answered. Histories
    follow each other in the order they started; messages keep their order within each.

    Raises:
        ConversationNotFound: the principal of ``chat`` sees no conversation with this id.
    """
    detail = await chat.get_conversation(conversation_id, messages=True)
    stored = [
        message
        for history in detail.histories
        if history.status == "completed"
        for message in history.messages or ()
        if message.status == "complete"
    ]
    return to_model_messages(stored)


def to_model_messages(stored: Iterable[Message]) -> list[pai.ModelMessage]:
    """pydantic-ai messages from stored ones: exactly as recorded when ``native`` is pydantic-ai's,
    rebuilt from the neutral ``parts`` when another writer stored them."""
    out: list[pai.ModelMessage] = []
    tool_names: dict[str, str] = {}
    for message in stored:
        if message.native is not None and message.native.format == NATIVE_FORMAT:
            out += pai.ModelMessagesTypeAdapter.validate_python([message.native.data])
        else:
            out.append(_from_parts(message, tool_names))
        if isinstance(out[-1], pai.ModelResponse):
            tool_names.update(
                (p.tool_call_id, p.tool_name) for p in out[-1].parts if isinstance(p, pai.ToolCallPart)
            )
    return out


def _from_parts(message: Message, tool_names: dict[str, str]) -> pai.ModelMessage:
    parts = message.parts if message.parts is not None else [TextPart(text=message.content)]
    if message.role == "assistant":
        response: list[pai.ModelResponsePart] = []
        for part in parts:
            if isinstance(part, TextPart):
                response.append(pai.TextPart(part.text))
            elif isinstance(part, ReasoningPart):
                response.append(pai.ThinkingPart(part.text))
            elif isinstance(part, ToolCallPart):
                response.append(pai.ToolCallPart(part.name, part.arguments, tool_call_id=part.id))
        return pai.ModelResponse(parts=response, model_name=message.model)
    if message.role == "system":
        return pai.ModelRequest(parts=[pai.SystemPromptPart(message.content)])
    request: list[pai.ModelRequestPart] = []
    user: list[pai.UserContent] = []
    for part in parts:
        if isinstance(part, ToolResultPart):
            name = tool_names.get(part.call_id, "")
            request.append(pai.ToolReturnPart(name, part.content, tool_call_id=part.call_id))
        elif isinstance(part, TextPart):
            user.append(part.text)
        elif isinstance(part, ImagePart | AudioPart | FilePart):
            user.append(_media(part))
    if user:
        content: str | list[pai.UserContent] = (
            user[0] if len(user) == 1 and isinstance(user[0], str) else user
        )
        request.append(pai.UserPromptPart(content))
    return pai.ModelRequest(parts=request)


def _media(part: ImagePart | AudioPart | FilePart) -> pai.UserContent:
    if part.data is not None:
        return pai.BinaryContent(base64.b64decode(part.data), media_type=part.media_type or "")
    url = part.url or ""
    if isinstance(part, ImagePart):
        return pai.ImageUrl(url)
    if isinstance(part, AudioPart):
        return pai.AudioUrl(url)
    return pai.DocumentUrl(url)
