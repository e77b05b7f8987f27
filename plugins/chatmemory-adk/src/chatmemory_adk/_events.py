"""ADK events as chatmemory messages, and back."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from google.adk.events.event import Event
from google.genai import types

from chatmemory import (
    AudioPart,
    ContentPart,
    FilePart,
    ImagePart,
    Message,
    NewMessage,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.recording import model_label, native_message

NATIVE_FORMAT = "google-adk"
"""The ``native.format`` of every message this service writes: the ADK event as JSON."""


def event_time(timestamp: float) -> datetime:
    """An event's timestamp as the aware UTC datetime stored as its message's ``created_at``."""
    return datetime.fromtimestamp(timestamp, UTC)


def to_message(event: Event, *, model: str | None) -> NewMessage:
    """The message recording ``event``: its parts, its role, and the event itself in ``native``.

    Function responses make a ``tool`` message; other events of the user are ``user``
    messages, and those of an agent ``assistant`` messages produced by ``model`` (as
    ``model_label`` keeps it).
    """
    given = event.content.parts if event.content is not None and event.content.parts else []
    parts = [part for p in given for part in _parts(p)]
    if any(isinstance(p, ToolResultPart) for p in parts):
        role = "tool"
    elif event.author == "user":
        role = "user"
    else:
        role = "assistant"
    data = event.model_dump(mode="json", exclude_none=True)
    # Equal events delivered again are stored once; distinct events sharing an id are not.
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]
    fields: dict[str, Any] = {
        "role": role,
        "content": parts or "",
        "model": model_label(model) if role == "assistant" else None,
        "usage": _usage(event.usage_metadata) if role == "assistant" else None,
        "metadata": {"author": event.author, "invocation_id": event.invocation_id},
        "key": f"{key_prefix(event.id)}{digest}",
    }
    # ADK's own database service stores events in exactly this form; a float JSON cannot hold
    # (a logprob of -inf from an OpenAI-compatible model), which it keeps on SQLite, as null.
    return native_message(fields, NATIVE_FORMAT, data)


def key_prefix(event_id: str) -> str:
    """How the keys of the messages recording the event ``event_id`` begin."""
    return f"{event_id[:200]}#"


def to_event(message: Message) -> Event | None:
    """The event a message recorded, or ``None`` for a message this service did not write."""
    if message.native is None or message.native.format != NATIVE_FORMAT:
        return None
    return Event.model_validate(message.native.data)


def _usage(usage: types.GenerateContentResponseUsageMetadata | None) -> dict[str, int] | None:
    """The token counts of a model event. Gemini reports a thinking model's thought tokens and
    the tokens of its tool-use prompts apart from ``candidates`` and ``prompt``, yet bills and
    totals them: they count as output and input, as ADK's own telemetry counts them. Of those,
    the cached input and thought tokens are also given apart (``cached_tokens``,
    ``reasoning_tokens``, as the OpenAI Agents adapter names them) when there are any."""
    if usage is None:
        return None
    counts = {
        "input_tokens": _sum(usage.prompt_token_count, usage.tool_use_prompt_token_count),
        "output_tokens": _sum(usage.candidates_token_count, usage.thoughts_token_count),
        "total_tokens": usage.total_token_count,
        "cached_tokens": usage.cached_content_token_count or None,
        "reasoning_tokens": usage.thoughts_token_count or None,
    }
    found = {name: count for name, count in counts.items() if count is not None}
    return found or None


def _sum(*counts: int | None) -> int | None:
    """The sum of the counts reported, ``None`` when none is."""
    found = [count for count in counts if count is not None]
    return sum(found) if found else None


def _parts(part: types.Part) -> list[ContentPart]:
    found: list[ContentPart] = []
    if part.text is not None:
        found.append(ReasoningPart(text=part.text) if part.thought else TextPart(text=part.text))
    if part.function_call is not None:
        call = part.function_call
        found.append(ToolCallPart(id=call.id or "", name=call.name or "", arguments=_json(call.args or {})))
    if part.function_response is not None:
        response = part.function_response
        found.append(
            ToolResultPart(
                call_id=response.id or "",
                content=json.dumps(response.response or {}, default=str, ensure_ascii=False),
                is_error="error" in (response.response or {}),
            )
        )
    if part.inline_data is not None and part.inline_data.data is not None:
        blob = part.inline_data
        data = base64.b64encode(blob.data or b"").decode("ascii")
        found.append(_media(blob.mime_type or "application/octet-stream", data=data, name=blob.display_name))
    if part.file_data is not None and part.file_data.file_uri:
        ref = part.file_data
        found.append(_media(ref.mime_type or "", url=ref.file_uri, name=ref.display_name))
    if part.executable_code is not None and part.executable_code.code:
        found.append(TextPart(text=part.executable_code.code))
    if part.code_execution_result is not None and part.code_execution_result.output:
        found.append(TextPart(text=part.code_execution_result.output))
    return found


def _media(
    mime: str, *, data: str | None = None, url: str | None = None, name: str | None = None
) -> ContentPart:
    media_type = mime or None
    if mime.startswith("image/"):
        return ImagePart(data=data, url=url, media_type=media_type)
    if mime.startswith("audio/"):
        return AudioPart(data=data, url=url, media_type=media_type)
    return FilePart(data=data, url=url, media_type=media_type, filename=name)


def _json(value: dict[str, Any]) -> dict[str, Any] | str:
    # Arguments are JSON objects in practice; anything else is kept as its JSON text.
    try:
        return json.loads(json.dumps(value, allow_nan=False))  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        return json.dumps(value, default=str)
