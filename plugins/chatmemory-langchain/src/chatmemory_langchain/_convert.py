"""Translation between LangChain messages and chatmemory messages."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

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
from chatmemory.recording import key_text, model_label, native_message, storable

NATIVE_FORMAT = "langchain"
"""The ``native.format`` of messages this package stores (``data`` is ``message_to_dict``)."""

_ROLES: dict[str, Role] = {
    "human": "user",
    "ai": "assistant",
    "tool": "tool",
    "system": "system",
    "function": "tool",  # what a function called by OpenAI's legacy function calling returned
    # What a streamed call gives back whole (a chain's reply, kept as its chunks added up).
    "HumanMessageChunk": "user",
    "AIMessageChunk": "assistant",
    "ToolMessageChunk": "tool",
    "SystemMessageChunk": "system",
    "FunctionMessageChunk": "tool",
}
_CHAT_ROLES: dict[str, Role] = {
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "system": "system",
    "developer": "system",  # OpenAI's name for system instructions to its reasoning models
}
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)
_KEY_CHARS = 255  # the store's cap on a message key
_MEDIA: dict[str, type[ImagePart | AudioPart | FilePart]] = {
    "image": ImagePart,
    "audio": AudioPart,
    "file": FilePart,
}


def model_name_of(model: object) -> str:
    """The name a chat model is known by: its ``model_name``/``model``/``model_id``/``deployment_name``
    attribute, else the name LangChain reports for tracing, else its class name."""
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value.strip():
            return value
    bound = getattr(model, "bound", None)
    if bound is not None and bound is not model:
        return model_name_of(bound)
    if isinstance(model, BaseChatModel):
        name = model._get_ls_params().get("ls_model_name")
        if isinstance(name, str) and name.strip():
            return name
    return type(model).__name__


def key_of(message_id: str | None) -> str | None:
    """The idempotency key of a message with this LangChain id: the id itself, or a digest of
    one longer than a key may be (ids are free-form); none for a message without an id."""
    return key_text(message_id, _KEY_CHARS) if message_id else None


def produced_by(message: AIMessage) -> str | None:
    """The model a provider reports in ``response_metadata["model_name"]``, if any."""
    name = message.response_metadata.get("model_name")
    return name if isinstance(name, str) and name.strip() else None


def role_of(message: BaseMessage) -> Role:
    """The chatmemory role of a LangChain message (unknown chat roles count as ``user``)."""
    if isinstance(message, ChatMessage):
        return _CHAT_ROLES.get(message.role, "user")
    return _ROLES.get(message.type, "user")


def to_new_message(message: BaseMessage, *, keyed: bool = True) -> NewMessage:
    """A chatmemory ``NewMessage`` for a LangChain message, with its native form; its
    LangChain ``id`` becomes the idempotency ``key`` unless ``keyed`` is false.

    Raises:
        InvalidInputError: the message cannot be stored (too long, non-JSON fields, ...).
    """
    role = role_of(message)
    model = usage = None
    if isinstance(message, AIMessage):
        model = produced_by(message)
        usage = dict(message.usage_metadata) if message.usage_metadata else None
    try:
        content = _content_of(message)
    except ValidationError:  # a lone surrogate, which no part takes: U+FFFD in its place
        content = _content_of(_texts_storable(message))
    fields = {
        "role": role,
        "content": content,
        "model": model_label(model) if role == "assistant" else None,
        "usage": usage,
        "key": key_of(message.id) if keyed else None,
    }
    return native_message(fields, NATIVE_FORMAT, _json_of(message_to_dict(message)))


def _texts_storable(message: BaseMessage) -> BaseMessage:
    update = {"content": storable(message.content), "additional_kwargs": storable(message.additional_kwargs)}
    if isinstance(message, AIMessage):
        update["tool_calls"] = storable(message.tool_calls)
        update["invalid_tool_calls"] = storable(message.invalid_tool_calls)
    return message.model_copy(update=update)


def _json_of(data: Any) -> Any:
    """``data`` as JSON values: dates, ids, sets and the like in their JSON form, bytes in
    base64, infinities and NaN (a logprob of -inf) as null, and any other object (a tool's
    ``artifact`` may be anything) as its ``repr``, so a message LangChain accepted is stored
    rather than refused."""
    return to_jsonable_python(data, fallback=repr, bytes_mode="base64", inf_nan_mode="null")


def _content_of(message: BaseMessage) -> str | list[ContentPart]:
    if isinstance(message, ToolMessage):
        return [
            ToolResultPart(
                call_id=message.tool_call_id, content=message.text, is_error=message.status == "error"
            )
        ]
    calls: list[ContentPart] = []
    if isinstance(message, AIMessage):
        calls = [
            # Read with json.loads, which takes NaN and Infinity: kept as in the native form.
            ToolCallPart(id=c.get("id") or "", name=c["name"], arguments=_json_of(c["args"]))
            for c in message.tool_calls
        ]
        calls += [
            ToolCallPart(id=c.get("id") or "", name=c.get("name") or "", arguments=c.get("args") or "")
            for c in message.invalid_tool_calls
        ]
    # DeepSeek's, Groq's and Ollama's integrations keep a reply's reasoning there.
    reasoning = message.additional_kwargs.get("reasoning_content") if isinstance(message, AIMessage) else None
    if not isinstance(reasoning, str):
        reasoning = None
    if isinstance(message.content, str) and not calls and not reasoning:
        return message.content
    parts = _parts_of(message.content)
    if reasoning and not any(isinstance(p, ReasoningPart) for p in parts):
        parts.insert(0, ReasoningPart(text=reasoning))
    return [*parts, *calls]


def _parts_of(content: str | Sequence[str | Mapping[str, Any]]) -> list[ContentPart]:
    if isinstance(content, str):
        return [TextPart(text=content)] if content else []
    parts: list[ContentPart] = []
    for block in content:
        part = TextPart(text=block) if isinstance(block, str) else _part_of(block)
        if part is not None:
            parts.append(part)
    return parts


def _part_of(block: Mapping[str, Any]) -> ContentPart | None:
    kind = block.get("type")
    if kind == "text":  # empty in a streamed reply that only calls tools: no part
        text = block.get("text")
        return TextPart(text=str(text)) if text else None
    if kind in ("reasoning", "thinking"):
        text = block.get(kind)
        if text is None and isinstance(summary := block.get("summary"), list):
            # OpenAI's Responses API: the reasoning's summaries, each a block of its own.
            text = "\n\n".join(str(s.get("text") or "") for s in summary if isinstance(s, Mapping))
        return ReasoningPart(text=str(text or ""))
    if kind == "reasoning_content":  # Bedrock's Converse API: {"text", "signature"}
        inner = block.get(kind)
        text = inner.get("text") if isinstance(inner, Mapping) else inner
        return ReasoningPart(text=str(text or ""))
    if kind == "image_url":
        url = block.get("image_url")
        url = url.get("url") if isinstance(url, Mapping) else url
        return _media("image", url=url) if isinstance(url, str) else None
    if kind in _MEDIA:
        filename = block.get("filename") or (block.get("extras") or {}).get("filename")
        return _media(
            kind,
            url=block.get("url"),
            data=block.get("base64") or block.get("data"),
            media_type=block.get("mime_type"),
            filename=filename,
        )
    return None


def _media(
    kind: str, *, url: Any = None, data: Any = None, media_type: Any = None, filename: Any = None
) -> ContentPart | None:
    if isinstance(url, str) and (inline := _DATA_URL.match(url)):
        url, data, media_type = None, inline["data"], inline["type"]
    if not isinstance(url, str) and not isinstance(data, str):
        return None  # e.g. a provider file id: kept in the native form only
    fields: dict[str, Any] = (
        {"url": url} if isinstance(url, str) else {"data": data, "media_type": media_type}
    )
    if kind == "file" and isinstance(filename, str):
        fields["filename"] = filename
    try:
        part: ContentPart = _MEDIA[kind].model_validate(fields)
    except ValidationError:
        return None  # e.g. base64 without its media type: kept in the native form only
    return part


def from_stored_many(stored: Sequence[Message]) -> list[BaseMessage]:
    """``from_stored`` for each message, the native ones converted in one pass."""
    native = messages_from_dict([m.native.data for m in stored if _is_native(m)])  # type: ignore[union-attr,misc]
    converted = iter(native)
    return [next(converted) if _is_native(m) else from_stored(m) for m in stored]


# Values shared as they are by a copy: nothing can change them in place.
_ATOMS = frozenset({str, int, float, bool, type(None)})


def _copied(value: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of a message's value: JSON-shaped ones (dicts, lists, strings, numbers),
    which are what messages hold, copied directly; anything else by ``copy.deepcopy``. As
    with ``copy.deepcopy``, ``memo`` (one per message) makes a value held twice one copy
    held twice, and a value that holds itself a copy that holds itself."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is not dict and kind is not list:
        return copy.deepcopy(value, memo)
    done = memo.get(id(value))
    if done is not None:
        return done
    if kind is dict:
        copied_dict: dict[Any, Any] = {}
        memo[id(value)] = copied_dict
        for key, item in value.items():
            copied_dict[key] = item if type(item) in _ATOMS else _copied(item, memo)
        return copied_dict
    copied_list: list[Any] = []
    memo[id(value)] = copied_list
    for item in value:
        copied_list.append(item if type(item) in _ATOMS else _copied(item, memo))
    return copied_list


def copy_of(message: BaseMessage) -> BaseMessage:
    """``message.model_copy(deep=True)``, a caller's to change, in a fraction of its time: a
    shallow copy whose containers (content blocks, tool calls, metadata) are copied in turn."""
    copied = message.model_copy()  # its own dicts of fields, extra fields and private attributes
    memo: dict[int, Any] = {}
    for values in (copied.__dict__, copied.__pydantic_extra__, copied.__pydantic_private__):
        if values:
            for name, value in values.items():
                if type(value) not in _ATOMS:
                    values[name] = _copied(value, memo)
    return copied


def _is_native(message: Message) -> bool:
    return message.native is not None and message.native.format == NATIVE_FORMAT


def from_stored(message: Message) -> BaseMessage:
    """The LangChain message for a stored one: its native form when LangChain stored it,
    else one rebuilt from the neutral parts (id = the chatmemory message id)."""
    if message.native is not None and message.native.format == NATIVE_FORMAT:
        return messages_from_dict([message.native.data])[0]  # type: ignore[list-item]
    mid = str(message.id)
    parts = message.parts or []
    blocks: list[str | dict[str, Any]] = [b for p in parts if (b := _block_of(p)) is not None]
    content: str | list[str | dict[str, Any]] = blocks if blocks else message.content
    if message.role == "assistant":
        calls: list[dict[str, Any]] = []
        invalid: list[dict[str, Any]] = []
        for p in parts:
            if isinstance(p, ToolCallPart):
                args = p.arguments_object()
                if args is not None:
                    calls.append({"id": p.id, "name": p.name, "args": args})
                else:
                    invalid.append({"id": p.id, "name": p.name, "args": p.arguments, "error": None})
        meta = {"model_name": message.model} if message.model else {}
        return AIMessage(
            content=content, tool_calls=calls, invalid_tool_calls=invalid, response_metadata=meta, id=mid
        )
    if message.role == "tool":
        result = next((p for p in parts if isinstance(p, ToolResultPart)), None)
        call_id = result.call_id if result else ""
        status = "error" if result and result.is_error else "success"
        return ToolMessage(content=message.content, tool_call_id=call_id, status=status, id=mid)
    if message.role == "system":
        return SystemMessage(content=content, id=mid)
    return HumanMessage(content=content, id=mid)


def _block_of(part: ContentPart) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ReasoningPart):
        return {"type": "reasoning", "reasoning": part.text}
    if isinstance(part, ImagePart | AudioPart | FilePart):
        if part.url is not None:
            return {"type": part.type, "url": part.url}
        return {"type": part.type, "base64": part.data, "mime_type": part.media_type}
    return None
