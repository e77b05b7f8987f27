"""Turning store errors into tool errors a model can act on.

The texts name only what the caller sent; they never carry SQL, stack traces or another
principal's ids. Database failures become one generic message (the details go to the log).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from chatmemory import (
    ChatMemoryError,
    ConflictError,
    ConversationNotFound,
    CorruptDataError,
    HistoryNotFound,
    InvalidInputError,
    MessageNotFound,
    NotFoundError,
    SchemaOutOfDateError,
)
from chatmemory_mcp.schema import expectation

__all__ = [
    "RESOURCE_NOT_FOUND",
    "STORAGE_UNAVAILABLE",
    "ArgumentError",
    "MissingError",
    "argument_text",
    "resource_errors",
    "tool_errors",
    "tool_message",
    "validation_text",
]

logger = logging.getLogger("chatmemory_mcp")

STORAGE_UNAVAILABLE = "the conversation store is unavailable right now; nothing was changed. Try again later."

RESOURCE_NOT_FOUND = -32002
"""The JSON-RPC error code the MCP specification gives a resource that does not exist."""

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
        return argument_text(exc.field or "input", exc.reason, None)
    if isinstance(exc, ConflictError):
        text = str(exc)
        if "history" in text:
            return f"{text}. A finished history is closed: call start_history to record a new run."
        return f"{text}."
    if isinstance(exc, CorruptDataError):
        logger.error("corrupt stored data: %s", exc)
        return f"{exc}. A retry reads it the same way; nothing was changed."
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
    except InvalidInputError as exc:
        raise ArgumentError(exc.field or "input", exc.reason) from None
    except NotFoundError as exc:
        raise MissingError(exc) from None
    except ChatMemoryError as exc:
        raise ToolError(tool_message(exc)) from None


@contextmanager
def resource_errors() -> Iterator[None]:
    """Re-raise store errors in the block as resource errors (not-found stays not-found)."""
    try:
        yield
    except NotFoundError as exc:
        raise ResourceNotFoundError(f"{exc.kind} {exc.object_id} not found") from None
    except InvalidInputError as exc:
        raise MCPError(
            code=INVALID_PARAMS, message=argument_text(exc.field or "uri", exc.reason, None)
        ) from None
    except ChatMemoryError as exc:
        raise ResourceError(tool_message(exc)) from None
    except ToolError as exc:
        raise ResourceError(str(exc)) from None


class MissingError(ToolError):
    """An id that names nothing the caller can see; the server may say what the id is instead.

    Attributes:
        kind: what was looked for (``"conversation"``, ``"history"``, ``"message"``).
        object_id: the id as the store read it.
    """

    def __init__(self, exc: NotFoundError) -> None:
        self.kind = exc.kind
        self.object_id = str(exc.object_id)
        super().__init__(tool_message(exc))


class ArgumentError(ToolError):
    """An argument the store or the server rejected; the server words it with the tool's schema.

    Attributes:
        field: dotted path of the argument (``"messages.0.role"``).
        reason: what is wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(argument_text(field, reason, None))


def argument_text(field: str, reason: str, schema: dict[str, Any] | None) -> str:
    """One rejected argument in the words every input error uses: which, what was wrong, what to send."""
    if field in _WANTED:
        wanted = _WANTED[field]
    elif "." not in field and field.endswith("_id"):
        wanted = "an id exactly as a tool returned it"
    else:
        wanted = expectation(_schema_at(schema, field)) if schema else ""
    send = f"Send {wanted}." if wanted else "Fix it and call the tool again."
    reason = _UNKNOWN_TAG.sub(r"has an unknown type \1; use one of \2", _REWORDED.get(reason, reason)).rstrip(
        "."
    )
    return f"invalid argument `{field}`: {reason[:1].lower()}{reason[1:]}. {send}"


# pydantic's words for a part of an unknown type, as the store passes them on.
_UNKNOWN_TAG = re.compile(
    r"^Input tag ('[^']*') found using '\w+' does not match any of the expected tags: (.*)$"
)

_WANTED = {"cursor": "the previous page's `next_cursor` unchanged, or none to start over"}

# pydantic's wording, as the store passes it on, in the words the other errors use.
_REWORDED = {"Field required": "is required", "Extra inputs are not permitted": "is not an accepted field"}


def validation_text(exc: ValidationError, schema: dict[str, Any] | None) -> str:
    """The arguments pydantic rejected, worded like ``argument_text``, most specific problem first."""
    best: dict[str, tuple[str, ErrorDetails]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in _clean(error["loc"]))
        top = path.split(".", 1)[0]
        # A union reports one error per branch: keep the deepest, which names what the caller meant.
        if top not in best or len(path) > len(best[top][0]):
            best[top] = (path, error)
    texts = []
    for path, error in best.values():
        problem = _problem(error)
        if error["type"] == "extra_forbidden":
            parent = _schema_at(schema, path.rpartition(".")[0]) if "." in path else schema
            names = sorted((parent or {}).get("properties", {}))
            problem += f" (accepted: {', '.join(names)})" if names else ""
        texts.append(argument_text(path or "input", problem, schema))
    return " ".join(texts[:5])


def _clean(loc: tuple[int | str, ...]) -> list[int | str]:
    """The location without pydantic's union-branch labels (``str``, ``list[...]``, part tags)."""
    out: list[int | str] = []
    for i, part in enumerate(loc):
        # Field names never hold "[" or "-"; pydantic's labels do (``list[...]``, ``constrained-str``).
        if isinstance(part, str) and ("[" in part or "-" in part or part in _TYPE_LABELS):
            continue
        if isinstance(part, str) and i and isinstance(loc[i - 1], int) and part in _PART_TAGS:
            continue
        out.append(part)
    return out


_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})
_PART_TAGS = frozenset({"text", "image", "audio", "file", "tool_call", "tool_result", "reasoning"})


def _problem(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    phrases = {
        "missing": "is required",
        "extra_forbidden": "is not an accepted field",
        "string_type": "must be a string",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "dict_type": "must be a JSON object",
        "list_type": "must be a list",
        "model_type": "must be a JSON object",
        "model_attributes_type": "must be a JSON object",
        "string_too_long": f"is longer than {ctx.get('max_length')} characters",
        "string_too_short": f"must have at least {ctx.get('min_length')} character(s)",
        "too_long": f"has more than {ctx.get('max_length')} items",
        "too_short": f"needs at least {ctx.get('min_length')} item(s)",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "literal_error": "is not one of the accepted values",
        "enum": "is not one of the accepted values",
        "union_tag_invalid": f"has an unknown type {ctx.get('tag')!r}; use one of {ctx.get('expected_tags')}",
        "union_tag_not_found": f"needs a `{ctx.get('discriminator', 'type')}` field".replace("'", ""),
    }
    if kind in phrases:
        return phrases[kind]
    return str(error["msg"]).removeprefix("Value error, ").rstrip(".")


def _schema_at(schema: dict[str, Any] | None, path: str) -> dict[str, Any] | None:
    """The sub-schema at a dotted argument path (``messages.0.role``), following ``$ref``s."""
    node: Any = schema
    defs = (schema or {}).get("$defs", {})
    for part in path.split("."):
        node = _deref(node, defs)
        if not isinstance(node, dict):
            return None
        if part.isdigit() and "items" in node:
            node = node["items"]
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            return None
    node = _deref(node, defs)
    return node if isinstance(node, dict) else None


def _deref(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict) and isinstance(node.get("$ref"), str):
        return defs.get(node["$ref"].rsplit("/", 1)[-1])
    if isinstance(node, dict) and "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) == 1:
            return _deref(options[0], defs)
    return node
