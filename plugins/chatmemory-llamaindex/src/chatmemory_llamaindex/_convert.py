"""Translation between LlamaIndex ``ChatMessage`` objects and chatmemory messages.

A message is stored with its LlamaIndex JSON in ``native`` (so it comes back exactly as it
was put), its text in ``content`` and its blocks as neutral content parts (so other
readers see images, tool calls and tool results). Messages another framework stored are
read back from their parts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from io import IOBase
from typing import Any

from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    DocumentBlock,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
    VideoBlock,
)

from chatmemory import (
    AudioPart,
    ContentPart,
    FilePart,
    ImagePart,
    Message,
    NewMessage,
    ReasoningPart,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.recording import json_copy, native_message

__all__ = ["NATIVE_FORMAT", "from_stored", "to_new_message"]

NATIVE_FORMAT = "llamaindex"
"""The ``native.format`` of messages this package stores (``data`` is the message's JSON)."""

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
}


ContentBlock = TextBlock | ImageBlock | AudioBlock | DocumentBlock | ToolCallBlock | ThinkingBlock


def to_new_message(message: ChatMessage, *, model: str | None = None) -> NewMessage:
    """The chatmemory message for ``message``; ``model`` is kept only on assistant messages."""
    role = _ROLES[message.role.value]
    # ``additional_kwargs`` may hold any object: one with no JSON form is kept as its repr,
    # so a message LlamaIndex accepted is stored rather than refused (with every other
    # message of the agent's final write).
    data = _with_bytes(message).model_dump(mode="json", fallback=repr)
    parts = [part for block in data["blocks"] for part in _block_parts(block)]
    # llama-index-llms-openai puts each tool call both in a ``ToolCallBlock`` and, as the
    # SDK's object, in ``additional_kwargs["tool_calls"]``: one call, one part.
    called = {p.id for p in parts if isinstance(p, ToolCallPart)}
    legacy = _legacy_tool_calls(data["additional_kwargs"])
    parts += [p for p in legacy if not (isinstance(p, ToolCallPart) and p.id in called)]
    # llama-index-llms-anthropic keeps a reply's thinking in ``additional_kwargs`` instead.
    thinking = data["additional_kwargs"].get("thinking")
    text = thinking.get("thinking") if isinstance(thinking, Mapping) else None
    if isinstance(text, str) and text and not any(isinstance(p, ReasoningPart) for p in parts):
        parts.insert(0, ReasoningPart(text=text))
    call_id = message.additional_kwargs.get("tool_call_id")
    if role == "tool" and isinstance(call_id, str):
        text = "\n".join(p.text for p in parts if isinstance(p, TextPart))
        parts = [ToolResultPart(call_id=call_id, content=text)]
    content: str | list[ContentPart]
    if all(isinstance(p, TextPart) for p in parts) and len(parts) <= 1:
        content = parts[0].text if parts else ""  # type: ignore[union-attr]
    else:
        content = parts
    fields = {"role": role, "content": content, "model": model if role == "assistant" else None}
    return native_message(fields, NATIVE_FORMAT, data)


# The field of each media block that may hold a file object instead of bytes.
_BINARY: dict[type[Any], str] = {
    ImageBlock: "image",
    AudioBlock: "audio",
    VideoBlock: "video",
    DocumentBlock: "data",
}


def _with_bytes(message: ChatMessage) -> ChatMessage:
    """``message`` with each media block given a file object (LlamaIndex takes one, as its
    JSON form takes only bytes, read raw) given that file's bytes instead: what the block
    holds once read again, kept in base64 as blocks built from bytes keep it."""
    blocks = [_block_with_bytes(block) for block in message.blocks]
    if all(new is old for new, old in zip(blocks, message.blocks, strict=True)):
        return message
    return message.model_copy(update={"blocks": blocks})


def _block_with_bytes(block: Any) -> Any:
    field = _BINARY.get(type(block))
    value = getattr(block, field) if field is not None else None
    if not isinstance(value, IOBase):
        return block
    value.seek(0)  # where LlamaIndex's own serialiser reads it from
    fields = {name: getattr(block, name) for name in type(block).model_fields}
    return type(block).model_validate({**fields, field: value.read()})


def from_stored(message: Message) -> ChatMessage:
    """The LlamaIndex message for a stored one: its native form when LlamaIndex stored it,
    else one built from its role and content parts."""
    if message.native is not None and message.native.format == NATIVE_FORMAT:
        # Built from a copy: pydantic keeps the nested values it is given, and the caller may
        # change them in place.
        return ChatMessage.model_validate(json_copy(message.native.data))
    if message.parts is None:
        return ChatMessage(role=message.role, content=message.content)
    kwargs: dict[str, Any] = {}
    blocks: list[ContentBlock] = []
    for part in message.parts:
        if isinstance(part, ToolResultPart):
            kwargs["tool_call_id"] = part.call_id
            blocks.append(TextBlock(text=part.content))
        else:
            block = _part_block(part)
            if block is not None:
                blocks.append(block)
    return ChatMessage(role=message.role, blocks=blocks, additional_kwargs=kwargs)


def _block_parts(block: Mapping[str, Any]) -> list[ContentPart]:
    kind = block["block_type"]
    if kind == "text":  # a reply holding only tool calls has an empty one: no part
        return [TextPart(text=block["text"])] if block["text"] else []
    if kind == "thinking":
        return [ReasoningPart(text=block["content"])] if block.get("content") else []
    if kind == "tool_call":
        name = block["tool_name"]
        return [ToolCallPart(id=block.get("tool_call_id") or name, name=name, arguments=block["tool_kwargs"])]
    if kind == "image":
        return _media(ImagePart, block.get("url"), block.get("image"), block.get("image_mimetype"))
    if kind == "audio":
        media_type = f"audio/{block['format']}" if block.get("format") else None
        return _media(AudioPart, block.get("url"), block.get("audio"), media_type)
    if kind == "document":
        title = block.get("title")
        return _media(FilePart, block.get("url"), block.get("data"), block.get("document_mimetype"), title)
    return []  # video, citations, cache points: kept in the native form only


def _media(
    kind: type[ImagePart | AudioPart | FilePart],
    url: Any,
    data: Any,
    media_type: str | None,
    filename: str | None = None,
) -> list[ContentPart]:
    extra = {"filename": filename} if kind is FilePart else {}
    if isinstance(url, str) and url:
        return [kind(url=url, **extra)]
    if isinstance(data, str) and data and media_type:
        return [kind(data=data, media_type=media_type, **extra)]
    return []  # a local path, or bytes of unknown type: kept in the native form only


def _legacy_tool_calls(kwargs: Mapping[str, Any]) -> list[ContentPart]:
    """Tool calls that provider integrations put in ``additional_kwargs["tool_calls"]``, read
    from its JSON form: OpenAI's (``{"id", "function": {"name", "arguments"}}``, the SDK's
    objects), Anthropic's (``{"id", "name", "input"}``, its ``tool_use`` blocks), Bedrock's
    (``{"toolUseId", "name", "input"}``) and Google's (``{"id", "name", "args"}``)."""
    calls = kwargs.get("tool_calls")
    parts: list[ContentPart] = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        if isinstance(function, Mapping):
            name, arguments = function.get("name"), function.get("arguments")
        else:  # Google's function calls hold theirs in ``args``
            name, arguments = call.get("name"), call.get("input", call.get("args"))
        call_id = call.get("id") or call.get("toolUseId")  # Bedrock's Converse API names it so
        if isinstance(name, str):
            if arguments is None:
                arguments = {}
            parts.append(
                ToolCallPart(
                    id=call_id if isinstance(call_id, str) else name,
                    name=name,
                    arguments=arguments if isinstance(arguments, str | dict) else json.dumps(arguments),
                )
            )
    return parts


def _part_block(part: ContentPart) -> ContentBlock | None:
    if isinstance(part, TextPart):
        return TextBlock(text=part.text)
    if isinstance(part, ReasoningPart):
        return ThinkingBlock(content=part.text)
    if isinstance(part, ToolCallPart):
        # A copy: the caller may change the block's arguments in place (see ``from_stored``).
        arguments = json_copy(part.arguments)
        return ToolCallBlock(tool_call_id=part.id, tool_name=part.name, tool_kwargs=arguments)
    if isinstance(part, ImagePart):
        image = {"url": part.url, "image": part.data, "image_mimetype": part.media_type}
        return ImageBlock.model_validate(image)
    if isinstance(part, AudioPart):
        fmt = part.media_type.split("/")[-1] if part.media_type else None
        return AudioBlock.model_validate({"url": part.url, "audio": part.data, "format": fmt})
    if isinstance(part, FilePart):
        return DocumentBlock.model_validate(
            {"url": part.url, "data": part.data, "document_mimetype": part.media_type, "title": part.filename}
        )
    return None
