"""Translation between Agents SDK input items and chatmemory messages.

An item is stored whole in ``native`` (so the SDK gets it back unchanged) and, beside it,
as neutral content parts that any reader can use. Items written by something else are
rebuilt from those parts.
"""

from __future__ import annotations

import copy
import json
import mimetypes
from collections.abc import Mapping, Sequence
from typing import Any, cast

from agents.items import TResponseInputItem
from pydantic import ValidationError

from chatmemory import (
    AudioPart,
    ContentPart,
    FilePart,
    ImagePart,
    Message,
    ReasoningPart,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)

__all__ = [
    "NATIVE_FORMAT",
    "content_of",
    "ends_on_answer",
    "is_answer",
    "item_identity",
    "items_of",
    "items_of_messages",
    "message_is_answer",
    "role_of",
]

NATIVE_FORMAT = "openai-agents"
"""The ``native.format`` of messages holding an Agents SDK input item."""

_FILE_ID_SCHEME = "openai-file:"
_MESSAGE_ROLES: dict[str, Role] = {
    "user": "user",
    "system": "system",
    "developer": "system",
    "assistant": "assistant",
}


def role_of(item: Mapping[str, Any]) -> Role:
    """The chatmemory role of an item: who produced it."""
    kind = item.get("type")
    if kind in (None, "message"):
        return _MESSAGE_ROLES.get(str(item.get("role")), "user")
    if kind == "mcp_approval_response" or str(kind).endswith("_output"):
        return "tool"
    return "assistant"


def call_of(item: Mapping[str, Any]) -> str | None:
    """The id of the tool call an item makes or answers (its ``call_id``); a hosted MCP
    server's approval request is known by its ``id``, which its response names in
    ``approval_request_id``."""
    kind = item.get("type")
    if kind == "mcp_approval_request":
        call = item.get("id")
    elif kind == "mcp_approval_response":
        call = item.get("approval_request_id")
    else:
        call = item.get("call_id")
    return call if isinstance(call, str) else None


def content_of(item: Mapping[str, Any]) -> str | list[ContentPart]:
    """The neutral content of an item: plain text, or content parts."""
    kind = item.get("type")
    if kind in (None, "message"):
        content = item.get("content")
        if isinstance(content, str):
            return content
        return [part for raw in _sequence(content) if (part := _part_of(raw)) is not None]
    if kind == "function_call":
        return [_call(item, item.get("name"), item.get("arguments"))]
    if kind == "custom_tool_call":
        return [_call(item, item.get("name"), item.get("input"))]
    if kind == "reasoning":
        texts = [_text_of(part) for key in ("summary", "content") for part in _sequence(item.get(key))]
        return [ReasoningPart(text="\n".join(t for t in texts if t))]
    if kind == "mcp_approval_response":
        verdict = "approved" if item.get("approve") else "denied"
        return [ToolResultPart(call_id=call_of(item) or "", content=verdict)]
    if role_of(item) == "tool":
        call_id = item.get("call_id") or item.get("id") or ""
        return [ToolResultPart(call_id=str(call_id), content=_output_text(item.get("output")))]
    if str(kind).endswith("_call"):
        arguments = {k: v for k, v in item.items() if k not in ("type", "id", "call_id", "status")}
        return [_call(item, kind, arguments)]
    return []


def item_identity(item: Mapping[str, Any] | object) -> str | None:
    """A key naming one output item across its forms (model output object or input dict)."""
    get = item.get if isinstance(item, Mapping) else lambda name: getattr(item, name, None)
    ref = get("call_id") or get("id")
    return f"{get('type') or 'message'}:{ref}" if isinstance(ref, str) and ref else None


def is_answer(item: Mapping[str, Any]) -> bool:
    """Whether an item is an assistant message: the answer that ends a run when nothing follows."""
    return item.get("type") in (None, "message") and item.get("role") == "assistant"


# Output items the model's provider ran itself (or that carry no call at all): the SDK has
# nothing to run for them, so a response listing them after its text still ends the run.
_HOSTED = frozenset(
    {
        "reasoning",
        "web_search_call",
        "file_search_call",
        "image_generation_call",
        "code_interpreter_call",
        "mcp_call",
        "mcp_list_tools",
        "tool_search_call",
        "tool_search_output",
    }
)


def ends_on_answer(items: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a batch ends on an assistant answer, followed at most by items the SDK runs
    nothing for (a hosted tool's call listed after the text, say): the batch a run's final
    output is saved in."""
    for item in reversed(items):
        if item.get("type") not in _HOSTED:
            return is_answer(item)
    return False


def message_is_answer(message: Message) -> bool:
    """Whether a stored message is an assistant answer (not a tool call or reasoning)."""
    native = _native_item(message)
    if native is not None:
        return is_answer(native)
    return message.role == "assistant" and not any(
        isinstance(part, ToolCallPart | ReasoningPart) for part in message.parts or ()
    )


def items_of(message: Message) -> list[TResponseInputItem]:
    """The input items a stored message stands for, in a copy the caller may change.

    A message recorded from the Agents SDK gives back exactly the item it stored. Any other
    message is rebuilt from its role and parts; parts the SDK cannot take as input (reasoning
    without its provider id) are left out. A tool result becomes a ``function_call_output``
    with its call id, whether or not the conversation holds that call: a session hands over
    what is stored, as ``SQLiteSession`` does.
    """
    native = _native_item(message)
    if native is not None:
        return [cast(TResponseInputItem, copy.deepcopy(native))]
    return [cast(TResponseInputItem, item) for item in _rebuild(message)]


def items_of_messages(messages: Sequence[Message]) -> list[TResponseInputItem]:
    """The items of freshly read messages, in order; pending and failed messages are left out.

    The messages come straight from a read, so their native items are handed over without a
    copy: nothing else holds them.
    """
    items: list[TResponseInputItem] = []
    for message in messages:
        if message.status != "complete":
            continue
        native = _native_item(message)
        if native is not None:
            items.append(cast(TResponseInputItem, native))
        else:
            items.extend(cast(TResponseInputItem, item) for item in _rebuild(message))
    return items


def _native_item(message: Message) -> dict[str, Any] | None:
    native = message.native
    if native is not None and native.format == NATIVE_FORMAT and isinstance(native.data, dict):
        return native.data
    return None


def _rebuild(message: Message) -> list[dict[str, Any]]:
    parts: Sequence[ContentPart] = message.parts or [TextPart(text=message.content)]
    if message.role == "tool":
        return [
            {"type": "function_call_output", "call_id": p.call_id, "output": p.content}
            for p in parts
            if isinstance(p, ToolResultPart)
        ]
    if message.role == "assistant":
        items: list[dict[str, Any]] = []
        text = "\n".join(p.text for p in parts if isinstance(p, TextPart))
        if text:
            items.append({"role": "assistant", "content": text})
        for p in parts:
            if isinstance(p, ToolCallPart):
                arguments = p.arguments if isinstance(p.arguments, str) else json.dumps(p.arguments)
                call = {"type": "function_call", "call_id": p.id, "name": p.name, "arguments": arguments}
                items.append(call)
        return items
    if message.parts is None:
        return [{"role": message.role, "content": message.content}]
    content = [raw for p in parts if (raw := _input_part(p)) is not None]
    return [{"role": message.role, "content": content}] if content else []


def _call(item: Mapping[str, Any], name: object, arguments: object) -> ToolCallPart:
    call_id = item.get("call_id") or item.get("id") or ""
    args: str | dict[str, Any] = arguments if isinstance(arguments, str | dict) else json.dumps(arguments)
    return ToolCallPart(id=str(call_id), name=str(name or ""), arguments=args)


def _part_of(raw: object) -> ContentPart | None:
    if not isinstance(raw, Mapping):
        return None
    kind = raw.get("type")
    if kind in ("input_text", "output_text", "text"):
        return TextPart(text=str(raw.get("text", "")))
    if kind == "refusal":
        return TextPart(text=str(raw.get("refusal", "")))
    if kind == "input_image":
        source = raw.get("image_url") or _file_id_url(raw.get("file_id"))
        return _media(ImagePart, source, None) if source else None
    if kind == "input_file":
        name = raw.get("filename")
        source = raw.get("file_data") or raw.get("file_url") or _file_id_url(raw.get("file_id"))
        return _media(FilePart, source, name, filename=name) if source else None
    if kind == "input_audio":
        audio = raw.get("input_audio")
        if isinstance(audio, Mapping) and audio.get("data"):
            media_type = f"audio/{audio.get('format', 'wav')}"
            return _inline(AudioPart, {"data": str(audio["data"]), "media_type": media_type})
    return None


def _media(cls: type[ImagePart | FilePart], source: str, name: object, **extra: Any) -> ContentPart | None:
    if source.startswith("data:") and ";base64," in source:
        head, data = source[5:].split(";base64,", 1)
        return _inline(cls, {"data": data, "media_type": head or "application/octet-stream", **extra})
    if cls is FilePart and "://" not in source and not source.startswith(_FILE_ID_SCHEME):
        # A bare file_data value is base64 without a data: prefix.
        guessed = mimetypes.guess_type(str(name or ""))[0]
        return _inline(cls, {"data": source, "media_type": guessed or "application/octet-stream", **extra})
    return cls(url=source, **extra)


def _inline(cls: type[ImagePart | AudioPart | FilePart], fields: dict[str, Any]) -> ContentPart:
    """A part holding inline data. Base64 broken into lines (as ``base64.encodebytes`` gives it,
    which the SDK takes) is joined again; data that is not base64 even so is named in a text
    part, and kept in the item only."""
    try:
        return cls.model_validate(fields)
    except ValidationError:
        pass
    try:
        return cls.model_validate({**fields, "data": "".join(str(fields["data"]).split())})
    except ValidationError:
        kind = cls.model_fields["type"].default
        return TextPart(text=f"[{kind} ({fields['media_type']}) that is not base64: kept in this item only]")


def _file_id_url(file_id: object) -> str | None:
    return f"{_FILE_ID_SCHEME}{file_id}" if isinstance(file_id, str) and file_id else None


def _input_part(part: ContentPart) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, ImagePart):
        if part.url is not None and part.url.startswith(_FILE_ID_SCHEME):
            file_id = part.url.removeprefix(_FILE_ID_SCHEME)
            return {"type": "input_image", "file_id": file_id, "detail": "auto"}
        return {"type": "input_image", "image_url": _source(part), "detail": "auto"}
    if isinstance(part, FilePart):
        raw: dict[str, Any] = {"type": "input_file"}
        if part.data is not None:
            raw["file_data"] = _source(part)
        elif part.url is not None and part.url.startswith(_FILE_ID_SCHEME):
            raw["file_id"] = part.url.removeprefix(_FILE_ID_SCHEME)
        else:
            raw["file_url"] = part.url
        if part.filename:
            raw["filename"] = part.filename
        return raw
    if isinstance(part, AudioPart) and part.data is not None:
        audio_format = (part.media_type or "audio/wav").rsplit("/", 1)[-1]
        return {"type": "input_audio", "input_audio": {"data": part.data, "format": audio_format}}
    return None


def _source(part: ImagePart | FilePart) -> str:
    if part.data is not None:
        return f"data:{part.media_type};base64,{part.data}"
    return part.url or ""


def _text_of(part: object) -> str:
    return str(part.get("text", "")) if isinstance(part, Mapping) else ""


def _output_text(output: object) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(t for part in output if (t := _text_of(part)))
    return json.dumps(output)


def _sequence(value: object) -> Sequence[object]:
    return value if isinstance(value, list | tuple) else ()
