"""Stored messages in providers' request formats, and OpenAI messages into ``NewMessage``s.

``to_openai`` builds Chat Completions ``messages``; ``to_anthropic`` builds the ``system``
and ``messages`` arguments of Anthropic's Messages API; ``from_openai`` turns Chat
Completions messages into ``NewMessage``s ready for ``append_messages``.

A message stored with a ``native`` value in the target format is returned exactly as
stored (``use_native=False`` converts from the neutral parts instead). What a format has
no place for is left out: reasoning parts (both; Anthropic thinking blocks need the
provider's signature, which only the native form keeps), a tool result's error flag
(OpenAI), audio (Anthropic, which gets a ``[audio]`` text block instead).
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from chatmemory.content import (
    AudioPart,
    ContentPart,
    FilePart,
    ImagePart,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.errors import InvalidInputError
from chatmemory.models import Message, NewMessage

__all__ = ["ANTHROPIC_FORMAT", "OPENAI_FORMAT", "from_openai", "to_anthropic", "to_openai"]

OPENAI_FORMAT = "openai.chat_completions"
"""``Native.format`` of a message stored by ``from_openai``."""
ANTHROPIC_FORMAT = "anthropic.messages"
"""``Native.format`` of a message ``to_anthropic`` returns as stored."""

OPENAI_FILE_SCHEME = "openai-file://"
_DATA_URL = re.compile(r"data:([^;,]+);base64,(.*)", re.DOTALL)
_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg"}
_AUDIO_TYPES = {v: k for k, v in _AUDIO_FORMATS.items()}
JSON = dict[str, Any]


def _native(message: Message, fmt: str, use_native: bool) -> Any:
    if use_native and message.native is not None and message.native.format == fmt:
        return message.native.data
    return None


def _data_url(part: ImagePart | AudioPart | FilePart) -> str:
    if part.data is None:
        return part.url or ""
    return f"data:{part.media_type};base64,{part.data}"


def _arguments_text(part: ToolCallPart) -> str:
    return part.arguments if isinstance(part.arguments, str) else json.dumps(part.arguments)


def _texts(parts: Sequence[ContentPart]) -> str:
    return "".join(p.text for p in parts if isinstance(p, TextPart))


# -- OpenAI Chat Completions ----------------------------------------------------------------------


def to_openai(messages: Sequence[Message], *, use_native: bool = True) -> list[JSON]:
    """Chat Completions ``messages`` for stored messages (text, images, audio, files, tool calls).

    A tool message becomes one ``tool`` message per tool result it holds.

    Raises:
        InvalidInputError: a tool message has no tool result part to name its call.
    """
    out: list[JSON] = []
    for i, message in enumerate(messages):
        native = _native(message, OPENAI_FORMAT, use_native)
        if isinstance(native, dict):
            out.append(native)
        elif message.role == "tool":
            results = [p for p in message.parts or () if isinstance(p, ToolResultPart)]
            if not results:
                raise InvalidInputError(f"messages.{i}", "a tool message needs a tool_result part for OpenAI")
            out += [{"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in results]
        elif message.role == "assistant":
            out.append(_openai_assistant(message))
        elif message.parts is None or message.role == "system":
            out.append({"role": message.role, "content": message.content})
        else:
            out.append({"role": message.role, "content": [_openai_part(p) for p in message.parts]})
    return out


def _openai_assistant(message: Message) -> JSON:
    parts = message.parts or []
    calls = [
        {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": _arguments_text(p)}}
        for p in parts
        if isinstance(p, ToolCallPart)
    ]
    text = message.content if message.parts is None else _texts(parts)
    result: JSON = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        result["tool_calls"] = calls
    return result


def _openai_part(part: ContentPart) -> JSON:
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": _data_url(part)}}
    if isinstance(part, AudioPart) and part.data is not None and part.media_type in _AUDIO_TYPES:
        return {
            "type": "input_audio",
            "input_audio": {"data": part.data, "format": _AUDIO_TYPES[part.media_type]},
        }
    if isinstance(part, FilePart) and part.url is not None and part.url.startswith(OPENAI_FILE_SCHEME):
        return {"type": "file", "file": {"file_id": part.url.removeprefix(OPENAI_FILE_SCHEME)}}
    if isinstance(part, FilePart) and part.data is not None:
        file: JSON = {"file_data": _data_url(part)}
        if part.filename is not None:
            file["filename"] = part.filename
        return {"type": "file", "file": file}
    if isinstance(part, TextPart | ReasoningPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ToolResultPart):
        return {"type": "text", "text": part.content}
    # Media OpenAI cannot take inline (audio in other encodings, files by URL): name it instead.
    where = getattr(part, "url", None) or getattr(part, "media_type", None) or ""
    return {"type": "text", "text": f"[{part.type}: {where}]"}


def from_openai(messages: Sequence[Mapping[str, Any]], *, native: bool = True) -> list[NewMessage]:
    """``NewMessage``s for Chat Completions messages (``developer`` counts as ``system``).

    With ``native=True`` each keeps the original message, so ``to_openai`` returns it as it
    was. Base64 ``data:`` URLs become inline data; other URLs stay URLs.

    Raises:
        InvalidInputError: ``messages`` is not a list, or a message is malformed or of an
            unknown role or part type.
    """
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
        raise InvalidInputError("messages", "must be a list of messages")
    result: list[NewMessage] = []
    for i, message in enumerate(messages):
        field = f"messages.{i}"
        if not isinstance(message, Mapping):
            raise InvalidInputError(field, "must be a mapping")
        role = message.get("role")
        content = message.get("content")
        data: JSON
        if role in ("system", "developer"):
            data = {"role": "system", "content": _plain_text(content, field)}
        elif role == "user":
            data = {"role": "user", "content": _user_content(content, field)}
        elif role == "assistant":
            data = {"role": "assistant", "content": _assistant_content(message, field)}
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise InvalidInputError(f"{field}.tool_call_id", "must be a string")
            text = _plain_text(content, field)
            data = {"role": "tool", "content": [ToolResultPart(call_id=call_id, content=text)]}
        else:
            raise InvalidInputError(f"{field}.role", f"unknown role {role!r}")
        if native:
            # As a mapping: NewMessage refuses what is not JSON with InvalidInputError.
            data["native"] = {"format": OPENAI_FORMAT, "data": dict(message)}
        result.append(NewMessage.parse(data, field))
    return result


def _plain_text(content: Any, field: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list) and all(isinstance(p, Mapping) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise InvalidInputError(f"{field}.content", "must be text or a list of text parts")


def _user_content(content: Any, field: str) -> str | list[ContentPart]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidInputError(f"{field}.content", "must be a string or a list of parts")
    return [_from_openai_part(p, f"{field}.content.{j}") for j, p in enumerate(content)]


def _from_openai_part(part: Any, field: str) -> ContentPart:
    kind = part.get("type") if isinstance(part, Mapping) else None
    try:
        if kind == "text":
            return TextPart(text=part["text"])
        if kind == "image_url":
            url = part["image_url"]["url"]
            if match := _DATA_URL.fullmatch(url):
                return ImagePart(media_type=match[1], data=match[2])
            return ImagePart(url=url)
        if kind == "input_audio":
            audio = part["input_audio"]
            media_type = _AUDIO_FORMATS.get(audio["format"], f"audio/{audio['format']}")
            return AudioPart(data=audio["data"], media_type=media_type)
        if kind == "file":
            file = part["file"]
            if "file_id" in file:
                return FilePart(url=OPENAI_FILE_SCHEME + file["file_id"])
            match = _DATA_URL.fullmatch(file["file_data"])
            if match is None:
                raise InvalidInputError(field, "file_data must be a base64 data: URL")
            return FilePart(media_type=match[1], data=match[2], filename=file.get("filename"))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(field, f"malformed {kind} part") from None
    raise InvalidInputError(field, f"unsupported part type {kind!r}")


def _assistant_content(message: Mapping[str, Any], field: str) -> str | list[ContentPart]:
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(
            str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, Mapping)
        )
    else:
        text = _plain_text(content, field)
    calls = message.get("tool_calls") or []
    if not calls:
        return text
    parts: list[ContentPart] = [TextPart(text=text)] if text else []
    for j, call in enumerate(calls):
        try:
            function = call["function"]
            parts.append(ToolCallPart(id=call["id"], name=function["name"], arguments=function["arguments"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError(f"{field}.tool_calls.{j}", "malformed tool call") from None
    return parts


# -- Anthropic Messages ----------------------------------------------------------------------------


def to_anthropic(messages: Sequence[Message], *, use_native: bool = True) -> JSON:
    """The ``system`` (when there is one) and ``messages`` arguments of Anthropic's Messages API.

    System messages are joined into ``system``; tool results travel in ``user`` turns as
    ``tool_result`` blocks; consecutive messages of the same role are merged into one turn,
    as the API requires alternating roles. Use as
    ``client.messages.create(model=..., max_tokens=..., **to_anthropic(context.messages))``.
    """
    system: list[str] = []
    turns: list[JSON] = []
    for message in messages:
        native = _native(message, ANTHROPIC_FORMAT, use_native)
        if message.role == "system":
            system.append(message.content)
            continue
        if isinstance(native, dict):
            role, content = native.get("role", "user"), native.get("content")
            if content is None:  # a turn with nothing to say (the API takes "" or blocks)
                content = ""
            elif not isinstance(content, str | list):
                raise InvalidInputError(
                    "message", f"{message.id}: its native content is neither text nor a list of blocks"
                )
        else:
            role = "assistant" if message.role == "assistant" else "user"
            content = _anthropic_content(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _blocks(turns[-1]["content"]) + _blocks(content)
        else:
            turns.append({"role": role, "content": content})
    result: JSON = {"messages": turns}
    if system:
        result["system"] = "\n\n".join(system)
    return result


def _blocks(content: str | list[JSON]) -> list[JSON]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _anthropic_content(message: Message) -> str | list[JSON]:
    if message.parts is None:
        if message.role == "tool":
            raise InvalidInputError("message", "a tool message needs a tool_result part for Anthropic")
        return message.content
    blocks: list[JSON] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart | FilePart):
            source = (
                {"type": "url", "url": part.url}
                if part.data is None
                else {"type": "base64", "media_type": part.media_type, "data": part.data}
            )
            blocks.append({"type": "image" if isinstance(part, ImagePart) else "document", "source": source})
        elif isinstance(part, ToolCallPart):
            blocks.append({"type": "tool_use", "id": part.id, "name": part.name, "input": _tool_input(part)})
        elif isinstance(part, ToolResultPart):
            block: JSON = {"type": "tool_result", "tool_use_id": part.call_id, "content": part.content}
            if part.is_error:
                block["is_error"] = True
            blocks.append(block)
        elif isinstance(part, AudioPart):
            blocks.append({"type": "text", "text": "[audio]"})
    return blocks


def _tool_input(part: ToolCallPart) -> JSON:
    """Anthropic wants an object; arguments that are not a JSON object go under ``"arguments"``."""
    parsed = part.arguments_object()
    return parsed if parsed is not None else {"arguments": part.arguments}
