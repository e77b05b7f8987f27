"""Messages as tools take them: chatmemory's own form, or OpenAI chat-completions messages.

A message with ``tool_calls``, ``tool_call_id``, ``name``, the ``developer`` role or OpenAI
content parts (``image_url``, ``input_audio``, ``file`` with a nested ``file``) is converted
by ``chatmemory.formats.from_openai``, which also keeps the original for ``to_openai``.
Anthropic content blocks (``tool_use``, ``tool_result`` with ``tool_use_id``, ``image`` or
``document`` with a ``source``, ``thinking``) become chatmemory's parts, the original kept for
``to_anthropic``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue

from chatmemory import InvalidInputError, Limits, Native, NewMessage
from chatmemory.formats import ANTHROPIC_FORMAT, from_openai

__all__ = ["CONTENT_CHARS", "MESSAGES_PER_CALL", "MessageIn", "Messages", "to_core"]

CONTENT_CHARS = Limits().content
"""Characters one message's text may hold (the store's limit)."""
MESSAGES_PER_CALL = 100
"""Messages one call may carry."""

_OPENAI_PARTS = frozenset({"image_url", "input_audio"})


class MessageIn(BaseModel):
    """A message: chatmemory's form, or an OpenAI chat-completions message."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="`developer` is stored as `system`."
    )
    content: Annotated[str, Field(max_length=CONTENT_CHARS)] | list[dict[str, JsonValue]] | None = Field(
        None,
        validation_alias=AliasChoices("content", "text"),
        description=(
            f"Text (max {CONTENT_CHARS} chars), or parts: {{type:text,text}}, "
            "{type:image|audio|file,url|data+media_type}, {type:tool_call,id,name,arguments}, "
            "{type:tool_result,call_id,content}, {type:reasoning,text}; OpenAI and Anthropic parts too."
        ),
    )
    tool_calls: list[dict[str, JsonValue]] | None = Field(
        None,
        max_length=MESSAGES_PER_CALL,
        description="OpenAI: [{id,type:'function',function:{name,arguments}}].",
    )
    tool_call_id: str | None = Field(
        None, max_length=255, description="OpenAI: the call a tool message answers."
    )
    name: str | None = Field(None, max_length=200, description="OpenAI: the participant's name.")
    model: str | None = Field(
        None,
        max_length=200,
        description="Assistant only; default: the run's model.",
    )
    usage: dict[str, JsonValue] | None = None
    metadata: dict[str, JsonValue] | None = None
    key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        validation_alias=AliasChoices("key", "idempotency_key", "client_message_id", "message_key"),
        description="Your id, unique in its conversation: a re-sent key is stored once.",
    )

    def is_openai(self) -> bool:
        """Whether this message uses OpenAI chat-completions fields."""
        if self.tool_calls is not None or self.tool_call_id is not None or self.name is not None:
            return True
        if self.role == "developer":
            return True
        return isinstance(self.content, list) and any(_openai_part(p) for p in self.content)


Messages = Annotated[
    list[MessageIn],
    Field(
        min_length=1,
        max_length=MESSAGES_PER_CALL,
        description=f"1-{MESSAGES_PER_CALL}, in order.",
    ),
]


def to_core(messages: Sequence[MessageIn]) -> list[NewMessage]:
    """The ``NewMessage``s the store takes.

    Raises:
        InvalidInputError: a message is malformed; ``field`` names it (``messages.3.content``).
    """
    return [_one(message, f"messages.{i}") for i, message in enumerate(messages)]


def _one(message: MessageIn, field: str) -> NewMessage:
    extra = message.model_dump(include={"model", "usage", "metadata", "key"}, exclude_none=True)
    if not message.is_openai():
        if message.content is None:
            raise InvalidInputError(f"{field}.content", "is required unless the message has tool_calls")
        if isinstance(message.content, list) and any(_anthropic_block(p) for p in message.content):
            parts = [_from_anthropic(p, f"{field}.content.{j}") for j, p in enumerate(message.content)]
            native = Native(format=ANTHROPIC_FORMAT, data={"role": message.role, "content": message.content})
            return NewMessage.parse(
                {"role": message.role, "content": parts, "native": native, **extra}, field
            )
        return NewMessage.parse({"role": message.role, "content": message.content, **extra}, field)
    if message.tool_calls is not None and message.role != "assistant":
        raise InvalidInputError(f"{field}.tool_calls", "only assistant messages have tool_calls")
    if message.tool_call_id is not None and message.role != "tool":
        raise InvalidInputError(f"{field}.tool_call_id", "only tool messages have a tool_call_id")
    raw: dict[str, Any] = message.model_dump(
        include={"role", "content", "tool_calls", "tool_call_id", "name"}, exclude_none=True
    )
    raw.setdefault("content", None)
    try:
        (converted,) = from_openai([raw])
    except InvalidInputError as exc:
        name = (exc.field or "").replace("messages.0", field, 1) or field
        raise InvalidInputError(name, exc.reason) from None
    return NewMessage.parse({**converted.model_dump(exclude_none=True), **extra}, field)


def _openai_part(part: Mapping[str, Any]) -> bool:
    kind = part.get("type")
    return kind in _OPENAI_PARTS or (kind == "file" and isinstance(part.get("file"), Mapping))


# Keys Anthropic puts on blocks that change nothing of what was said.
_ANTHROPIC_EXTRAS = frozenset({"cache_control", "citations"})


def _anthropic_block(part: Mapping[str, Any]) -> bool:
    kind = part.get("type")
    return (
        kind in ("tool_use", "thinking", "redacted_thinking")
        or (kind == "tool_result" and "tool_use_id" in part)
        or (kind in ("image", "document") and "source" in part)
        or not _ANTHROPIC_EXTRAS.isdisjoint(part)
    )


def _from_anthropic(block: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    """chatmemory's part for an Anthropic content block (other parts pass through unchanged).

    Raises:
        InvalidInputError: a block this store has no part for, or a malformed one.
    """
    block = {k: v for k, v in block.items() if k not in _ANTHROPIC_EXTRAS}
    kind = block.get("type")
    if kind == "tool_use":
        return {
            "type": "tool_call",
            "id": block.get("id"),
            "name": block.get("name"),
            "arguments": block.get("input", {}),
        }
    if kind == "tool_result" and "tool_use_id" in block:
        result = {
            "type": "tool_result",
            "call_id": block["tool_use_id"],
            "content": _result_text(block, field),
        }
        return result | ({"is_error": block["is_error"]} if "is_error" in block else {})
    if kind == "thinking":
        return {"type": "reasoning", "text": block.get("thinking")}
    if kind in ("image", "document") and "source" in block:
        return _media(block, field)
    if kind == "redacted_thinking":
        raise InvalidInputError(field, "redacted_thinking blocks cannot be stored; leave them out")
    return block


def _result_text(block: Mapping[str, Any], field: str) -> str:
    content = block.get("content", "")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(b, Mapping) and b.get("type") == "text" for b in content):
        return "\n".join(str(b.get("text", "")) for b in content)
    raise InvalidInputError(f"{field}.content", "must be text or a list of text blocks")


def _media(block: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    kind = "image" if block["type"] == "image" else "file"
    source = block["source"]
    where = source.get("type") if isinstance(source, Mapping) else None
    if where == "base64":
        return {"type": kind, "media_type": source.get("media_type"), "data": source.get("data")}
    if where == "url":
        return {"type": kind, "url": source.get("url")}
    raise InvalidInputError(f"{field}.source", "must be {type:base64,media_type,data} or {type:url,url}")
