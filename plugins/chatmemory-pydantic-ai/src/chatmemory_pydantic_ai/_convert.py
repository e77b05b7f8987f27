"""pydantic-ai messages to chatmemory messages.

One chatmemory message per ``ModelMessage``: a ``ModelResponse`` becomes an ``assistant``
message, a ``ModelRequest`` becomes a ``tool`` message when it answers tool calls and a
``user`` message otherwise. The whole ``ModelMessage`` is kept in ``native``, so reading it
back gives the same list; ``parts`` is the neutral form every other reader uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from pydantic_ai import messages as pai
from pydantic_ai.usage import RequestUsage, RunUsage

from chatmemory import (
    AudioPart,
    ContentPart,
    FilePart,
    ImagePart,
    NewMessage,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.recording import model_label, native_message

__all__ = ["NATIVE_FORMAT", "own_usage", "system_prompts", "to_new_messages", "usage_dict"]

NATIVE_FORMAT = "pydantic-ai"
"""The ``native.format`` of messages this package stores."""


def to_new_messages(
    messages: Sequence[pai.ModelMessage], *, keys: Sequence[str | None] | None = None
) -> list[NewMessage]:
    """The chatmemory form of ``messages``, one ``NewMessage`` each, in order (with ``keys``
    as their idempotency keys when given). A value JSON cannot hold (an object in a tool
    return's ``metadata``, which pydantic-ai never sends to the model) is kept as its ``repr``."""
    dumped = pai.ModelMessagesTypeAdapter.dump_python(list(messages), mode="json", fallback=repr)
    keyed = keys if keys is not None else [None] * len(messages)
    return [_to_new_message(m, data, key) for m, data, key in zip(messages, dumped, keyed, strict=True)]


def system_prompts(
    seen: Sequence[pai.ModelMessage], new: Iterable[pai.ModelMessage], *, given: Sequence[str] = ()
) -> list[str]:
    """The system prompts of a run: ``given`` ones, those of the first request in ``seen``, then
    the instructions of the requests in ``new``.

    pydantic-ai adds its ``SystemPromptPart`` only to the first request of a conversation, so a
    resumed run finds it there in the reloaded history; ``instructions`` are re-sent on every request.
    """
    found = list(given)
    first = seen[0] if seen else None
    if isinstance(first, pai.ModelRequest):
        found += [p.content for p in first.parts if isinstance(p, pai.SystemPromptPart)]
    for message in new:
        if isinstance(message, pai.ModelRequest) and message.instructions:
            found.append(message.instructions)
    return list(dict.fromkeys(found))


def usage_dict(usage: RunUsage | RequestUsage) -> dict[str, Any]:
    """A ``RunUsage`` or ``RequestUsage`` as a JSON object, without its zero counters; the
    ``cost`` pydantic-ai gives a priced model's usage (a ``Decimal``) becomes a number."""
    return {k: float(v) if isinstance(v, Decimal) else v for k, v in asdict(usage).items() if v}


def own_usage(messages: Iterable[pai.ModelMessage], run_id: str | None, tool_calls: int) -> dict[str, Any]:
    """The usage of run ``run_id`` from its own responses among ``messages`` (one request each)
    and its ``tool_calls``, without zero counters: for a run counting on a usage object other runs
    may count on at the same time (``usage=ctx.usage`` in a delegating tool)."""
    usage = RunUsage(tool_calls=tool_calls)
    for message in messages:
        if isinstance(message, pai.ModelResponse) and message.run_id == run_id:
            usage.requests += 1
            usage.incr(message.usage)
    return usage_dict(usage)


def _to_new_message(message: pai.ModelMessage, data: Any, key: str | None) -> NewMessage:
    if isinstance(message, pai.ModelResponse):
        meta = {
            "model_id": message.model_id,
            "provider_name": message.provider_name,
            "finish_reason": message.finish_reason,
        }
        fields: dict[str, Any] = {
            "role": "assistant",
            "content": _content(_response_parts(message.parts)),
            "model": model_label(message.model_name),
            "usage": usage_dict(message.usage) or None,
            "metadata": {k: v for k, v in meta.items() if v is not None} or None,
            "key": key,
        }
        return native_message(fields, NATIVE_FORMAT, data)
    parts, answers_tools = _request_parts(message.parts)
    fields = {"role": "tool" if answers_tools else "user", "content": _content(parts), "key": key}
    return native_message(fields, NATIVE_FORMAT, data)


def _content(parts: list[ContentPart]) -> str | list[ContentPart]:
    if not parts:
        return ""
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return parts[0].text
    return parts


def _request_parts(parts: Sequence[pai.ModelRequestPart]) -> tuple[list[ContentPart], bool]:
    """Neutral parts of a request. System prompts go to the history; bookkeeping parts stay native."""
    out: list[ContentPart] = []
    answers_tools = False
    for part in parts:
        if isinstance(part, pai.UserPromptPart):
            content = [part.content] if isinstance(part.content, str) else part.content
            out += [p for item in content if (p := _user_content(item)) is not None]
        elif isinstance(part, pai.ToolReturnPart):
            answers_tools = True
            error = part.outcome != "success"
            out.append(
                ToolResultPart(call_id=part.tool_call_id, content=part.model_response_str(), is_error=error)
            )
        elif isinstance(part, pai.RetryPromptPart) and part.tool_name:
            answers_tools = True
            out.append(
                ToolResultPart(call_id=part.tool_call_id, content=part.model_response(), is_error=True)
            )
        elif isinstance(part, pai.RetryPromptPart | pai.RetryFeedbackPart):
            out.append(TextPart(text=part.model_response()))
    return out, answers_tools


def _response_parts(parts: Sequence[pai.ModelResponsePart]) -> list[ContentPart]:
    out: list[ContentPart] = []
    for part in parts:
        if isinstance(part, pai.TextPart):
            out.append(TextPart(text=part.content))
        elif isinstance(part, pai.ThinkingPart):
            out.append(ReasoningPart(text=part.content))
        elif isinstance(part, pai.ToolCallPart | pai.NativeToolCallPart):
            args = part.args if isinstance(part.args, str | dict) else {}
            out.append(ToolCallPart(id=part.tool_call_id, name=part.tool_name, arguments=args))
        elif isinstance(part, pai.NativeToolReturnPart):
            out.append(ToolResultPart(call_id=part.tool_call_id, content=part.model_response_str()))
        elif isinstance(part, pai.FilePart):
            out.append(_binary(part.content))
    return out


def _user_content(item: pai.UserContent) -> ContentPart | None:
    """One piece of user input as a part; ``None`` for what has no neutral form (cache points,
    provider file ids), which ``native`` still keeps."""
    if isinstance(item, str):
        return TextPart(text=item)
    if isinstance(item, pai.TextContent):
        return TextPart(text=item.content)
    if isinstance(item, pai.ImageUrl):
        return ImagePart(url=item.url)
    if isinstance(item, pai.AudioUrl):
        return AudioPart(url=item.url)
    if isinstance(item, pai.DocumentUrl | pai.VideoUrl):
        return FilePart(url=item.url)
    if isinstance(item, pai.BinaryContent):
        return _binary(item)
    return None


def _binary(item: pai.BinaryContent) -> ContentPart:
    if item.is_image:
        return ImagePart(data=item.base64, media_type=item.media_type)
    if item.is_audio:
        return AudioPart(data=item.base64, media_type=item.media_type)
    return FilePart(data=item.base64, media_type=item.media_type)
