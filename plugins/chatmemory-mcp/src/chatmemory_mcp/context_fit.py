"""Fitting a conversation's tail into the response a model receives from ``get_context``.

The budget bounds the bytes of the response as sent (compact JSON, see ``models.wire``),
at ``CHARS_PER_TOKEN`` bytes per token, not just the message text. Selection walks back
from the newest message. A message that does not fit whole is clipped (and flagged) to
what is left, but to no more than half the budget, so one huge message never hides the
older ones; selection goes on with the older messages until one does not fit even clipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from chatmemory import Message
from chatmemory_mcp.message_input import CONTENT_CHARS
from chatmemory_mcp.models import ContextMessage, ContextOut, wire_size

__all__ = ["CHARS_PER_TOKEN", "MIN_CLIP_CHARS", "fit_context"]

CHARS_PER_TOKEN = 4
MIN_CLIP_CHARS = 40
"""A message clipped to fewer characters than this is left out instead."""
_PLACEHOLDER = 10**9


def fit_context(conversation_id: str, tail: Sequence[Message], max_tokens: int, older: int) -> ContextOut:
    """The newest messages of ``tail`` (in order) whose response fits ``max_tokens``.

    ``older`` counts the messages before ``tail`` (already left out).
    """
    budget = max_tokens * CHARS_PER_TOKEN
    envelope = ContextOut(
        conversation_id=conversation_id,
        messages=[],
        omitted=_PLACEHOLDER,
        estimated_tokens=_PLACEHOLDER,
        truncated=True,
    )
    room = budget - wire_size(envelope)
    kept: list[ContextMessage] = []
    for message in reversed(tail):
        separator = 1 if kept else 0
        view = ContextMessage.of(message, CONTENT_CHARS)
        size = wire_size(view) + separator
        if size > room:
            clipped = _clip(message, min(room, budget // 2) - separator)
            if clipped is None:
                break
            view, size = clipped, wire_size(clipped) + separator
        kept.append(view)
        room -= size
    kept.reverse()
    kept = _without_orphan_results(kept)
    result = ContextOut(
        conversation_id=conversation_id,
        messages=kept,
        omitted=older + len(tail) - len(kept),
        estimated_tokens=0,
        truncated=any(m.truncated for m in kept),
    )
    # The estimate is part of what it estimates: its own digits replace the placeholder 0.
    size = wire_size(result) - 1
    tokens = math.ceil(size / CHARS_PER_TOKEN)
    tokens = math.ceil((size + len(str(tokens))) / CHARS_PER_TOKEN)
    return result.model_copy(update={"estimated_tokens": tokens})


def _clip(message: Message, room: int) -> ContextMessage | None:
    """``message`` with its texts clipped to the most characters that fit ``room`` bytes."""
    low, high = MIN_CLIP_CHARS, max(MIN_CLIP_CHARS, room)
    if wire_size(ContextMessage.of(message, low)) > room:
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if wire_size(ContextMessage.of(message, middle)) <= room:
            low = middle
        else:
            high = middle - 1
    return ContextMessage.of(message, low)


def _without_orphan_results(messages: list[ContextMessage]) -> list[ContextMessage]:
    """Drop leading tool results whose call was left out: a model cannot use an answer without its call."""
    calls = {call.id for m in messages for call in m.tool_calls or ()}
    start = 0
    while start < len(messages) and messages[start].role == "tool":
        ids = (messages[start].tool_call_id or "").split(",")
        if all(i in calls for i in ids if i):
            break
        start += 1
    return messages[start:]
