"""The recent part of a conversation that fits a model's context window.

Token counts are estimates, not a tokenizer's: a message costs ``MESSAGE_OVERHEAD_TOKENS``
plus one token per ``CHARS_PER_TOKEN`` characters of its text (its content, the names and
arguments of its tool calls, and its reasoning), rounded up, plus ``MEDIA_TOKENS`` for each
image, audio clip or file. Four characters per token is close for English with common
tokenizers and overestimates most code; leave headroom when the budget is tight.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from chatmemory import _queries as q
from chatmemory import _rows
from chatmemory._scope_base import Id, ScopeBase
from chatmemory._validation import parse_id
from chatmemory.content import AudioPart, FilePart, ImagePart, ReasoningPart, ToolCallPart, ToolResultPart
from chatmemory.errors import InvalidInputError
from chatmemory.models import Message

__all__ = [
    "CHARS_PER_TOKEN",
    "MEDIA_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "Context",
    "ContextOps",
    "estimate_tokens",
]

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
MEDIA_TOKENS = 256


class Context(BaseModel):
    """The most recent messages of a conversation that fit a budget, oldest first.

    ``omitted`` counts the older messages left out; ``estimated_tokens`` is the estimate
    (see ``estimate_tokens``) for ``messages``.
    """

    model_config = ConfigDict(frozen=True)

    messages: list[Message]
    omitted: int
    estimated_tokens: int


def estimate_tokens(message: Message) -> int:
    """A tokenizer-free estimate of what ``message`` costs in a model's context.

    ``MESSAGE_OVERHEAD_TOKENS`` + ceil(characters / ``CHARS_PER_TOKEN``) +
    ``MEDIA_TOKENS`` per image, audio or file part. The characters are the content plus
    each tool call's name and arguments and each reasoning text.
    """
    chars = len(message.content)
    media = 0
    for part in message.parts or ():
        if isinstance(part, ToolCallPart):
            arguments = part.arguments if isinstance(part.arguments, str) else json.dumps(part.arguments)
            chars += len(part.name) + len(arguments)
        elif isinstance(part, ReasoningPart):
            chars += len(part.text)
        elif isinstance(part, ImagePart | AudioPart | FilePart):
            media += 1
    return MESSAGE_OVERHEAD_TOKENS + math.ceil(chars / CHARS_PER_TOKEN) + MEDIA_TOKENS * media


def _call_ids(message: Message) -> list[str]:
    return [p.id for p in message.parts or () if isinstance(p, ToolCallPart)]


def _result_ids(message: Message) -> list[str]:
    return [p.call_id for p in message.parts or () if isinstance(p, ToolResultPart)]


def tool_exchanges(messages: Sequence[Message]) -> list[list[Message]]:
    """Split messages (in order) into units that are kept or dropped whole.

    A unit is one message, except that an assistant message with tool calls and the tool
    messages answering them form one unit together with anything between them. A tool
    message that names no call id belongs with the unit just before it if that one calls tools.
    """
    units: list[list[Message]] = []
    unit_of_call: dict[str, int] = {}
    last_calling: int | None = None
    for message in messages:
        if message.role == "tool":
            ids = _result_ids(message)
            targets = [unit_of_call[i] for i in ids if i in unit_of_call]
            if not ids and last_calling is not None and last_calling == len(units) - 1:
                targets = [last_calling]
            if targets:
                first = min(targets)
                merged = [m for unit in units[first:] for m in unit]
                del units[first:]
                units.append([*merged, message])
                unit_of_call = {k: min(v, first) for k, v in unit_of_call.items()}
                last_calling = first
                continue
        units.append([message])
        calls = _call_ids(message) if message.role == "assistant" else []
        if calls:
            last_calling = len(units) - 1
            unit_of_call.update(dict.fromkeys(calls, last_calling))
    return units


class ContextOps(ScopeBase):
    async def get_context(
        self, conversation_id: Id, *, max_tokens: int = 4000, max_messages: int | None = None
    ) -> Context:
        """The most recent complete messages of a conversation that fit the budget, in order.

        This is what to hand a model when resuming a conversation. Messages still pending or
        failed are not part of it. Selection walks back from the newest message and stops at
        the first that does not fit, so the result is always an unbroken tail of the
        conversation; an assistant message with tool calls and the tool messages answering
        them are kept or left out together. Tokens are estimated by ``estimate_tokens``.

        Raises:
            ConversationNotFound: no visible conversation has this id.
            InvalidInputError: ``max_tokens`` or ``max_messages`` is not a positive integer.
        """
        cid = parse_id("conversation_id", conversation_id)
        _positive("max_tokens", max_tokens)
        if max_messages is not None:
            _positive("max_messages", max_messages)
        sqlite = self._db.is_sqlite
        plan = q.conversation_messages(self.principal, cid, complete=True, one_statement=not sqlite)
        history = _rows.messages(await self._db.run(plan), sqlite, cid)
        kept: list[list[Message]] = []
        tokens = count = 0
        for unit in reversed(tool_exchanges(history)):
            cost = sum(estimate_tokens(m) for m in unit)
            if tokens + cost > max_tokens or (max_messages is not None and count + len(unit) > max_messages):
                break
            kept.append(unit)
            tokens += cost
            count += len(unit)
        selected = [m for unit in reversed(kept) for m in unit]
        return Context(messages=selected, omitted=len(history) - len(selected), estimated_tokens=tokens)


def _positive(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(field, "must be a positive integer")
