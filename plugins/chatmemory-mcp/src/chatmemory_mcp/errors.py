"""Turning store errors into tool errors a model can act on.

The texts name only what the caller sent; they never carry SQL, stack traces or another
principal's ids. Database failures become one generic message (the details go to the log).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError

from chatmemory import (
    ChatMemoryError,
    ConflictError,
    ConversationNotFound,
    HistoryNotFound,
    InvalidInputError,
    MessageNotFound,
    NotFoundError,
    SchemaOutOfDateError,
)

__all__ = ["STORAGE_UNAVAILABLE", "resource_errors", "tool_errors", "tool_message"]

logger = logging.getLogger("chatmemory_mcp")

STORAGE_UNAVAILABLE = "the conversation store is unavailable right now; nothing was changed. Try again later."

_NEXT_STEP = {
    ConversationNotFound: "Call list_conversations to find its id, or start_conversation to create one.",
    HistoryNotFound: "Call get_conversation to see the histories, or start_history to begin one.",
    MessageNotFound: "Call list_messages to find a message id.",
}


def tool_message(exc: ChatMemoryError) -> str:
    """The text a model sees for a store error: what went wrong and what to do next."""
    if isinstance(exc, NotFoundError):
        hint = _NEXT_STEP.get(type(exc), "Check the id.")
        return f"{exc.kind} {exc.object_id} not found. {hint}"
    if isinstance(exc, InvalidInputError):
        return f"{exc}. Fix that argument and call the tool again."
    if isinstance(exc, ConflictError):
        text = str(exc)
        if "history" in text:
            return f"{text}. A finished history is closed: call start_history to record a new run."
        return f"{text}."
    if isinstance(exc, SchemaOutOfDateError):
        logger.error("database schema out of date: %s", exc)
        return "the conversation store needs an upgrade (`chatmemory migrate`); nothing was changed."
    logger.error("store failure: %s", exc, exc_info=exc)
    return STORAGE_UNAVAILABLE


@contextmanager
def tool_errors() -> Iterator[None]:
    """Re-raise store errors in the block as ``ToolError`` (an ``isError`` result)."""
    try:
        yield
    except ChatMemoryError as exc:
        raise ToolError(tool_message(exc)) from None


@contextmanager
def resource_errors() -> Iterator[None]:
    """Re-raise store errors in the block as resource errors (not-found stays not-found)."""
    try:
        yield
    except NotFoundError as exc:
        raise ResourceNotFoundError(f"{exc.kind} {exc.object_id} not found") from None
    except ChatMemoryError as exc:
        raise ResourceError(tool_message(exc)) from None
    except ToolError as exc:
        raise ResourceError(str(exc)) from None
