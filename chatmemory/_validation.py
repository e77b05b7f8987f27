"""Turning bad input into ``InvalidInputError`` before anything touches the database."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import ValidationError

from chatmemory.errors import InvalidInputError

if TYPE_CHECKING:
    from chatmemory.content import ContentPart

# Deep enough for what tools return (a page's element tree, two levels an element) and the
# frameworks' wrapping around it; shallow enough that a document holding such values, with the
# levels of an export or a request around them, stays within what JSON parsers take (pydantic's
# about 200).
MAX_JSON_DEPTH = 128
# Python refuses to print integers beyond a few thousand digits (sys.int_info), so a larger
# one could be stored but never read back; far below that, any integer round-trips exactly.
MAX_JSON_INT = 10**500


def invalid_input(exc: ValidationError, prefix: str | None = None) -> InvalidInputError:
    """The most specific problem pydantic found, as an ``InvalidInputError`` naming its field."""
    errors = exc.errors(include_url=False, include_input=False)
    # A union reports one error per branch; the deepest location is the one the caller meant.
    paths = [[str(p) for p in error["loc"] if not _is_branch(p)] for error in errors]
    best = max(range(len(errors)), key=lambda i: len(paths[i]))
    field = ".".join([prefix, *paths[best]] if prefix else paths[best]) or None
    return InvalidInputError(field, errors[best]["msg"].removeprefix("Value error, "))


def _is_branch(part: object) -> bool:
    # pydantic puts union branch names and discriminator values in the location path.
    return isinstance(part, str) and (part in _BRANCHES or "[" in part)


_BRANCHES = frozenset(
    {"text", "image", "audio", "file", "tool_call", "tool_result", "reasoning", "str", "int", "float", "bool"}
)


def check_text(field: str, value: str) -> str:
    """Reject what neither backend can store faithfully: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise InvalidInputError(field, "must not contain NUL characters")
    if not value.isascii():  # ASCII text, which ``isascii`` tells without reading it, has none
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(field, "must be valid unicode (no lone surrogates)") from None
    return value


def check_json(field: str, value: Any, depth: int = 0) -> None:
    """Require a JSON value (objects with string keys, arrays, strings, finite numbers, bools, null)."""
    if depth > MAX_JSON_DEPTH:
        raise InvalidInputError(field, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) >= MAX_JSON_INT:
            raise InvalidInputError(field, "must be JSON (integers of at most 500 digits)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(field, "must be JSON (no NaN or infinity)")
    elif isinstance(value, str):
        check_text(field, value)
    elif isinstance(value, list):
        for item in value:
            check_json(field, item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(field, "must be JSON (object keys must be strings)")
            check_text(field, key)
            check_json(field, item, depth + 1)
    else:
        raise InvalidInputError(field, f"must be JSON, got {type(value).__name__}")


def check_object(field: str, value: Any) -> dict[str, Any] | None:
    """A JSON object (or ``None``)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInputError(field, "must be a JSON object")
    copied = dict(value)
    check_json(field, copied)
    return copied


def parse_id(field: str, value: object) -> UUID:
    """A UUID from a ``UUID`` or its string form."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise InvalidInputError(field, "must be a UUID")


def utc_time(field: str, value: object) -> datetime:
    """A timezone-aware time, as the same instant in UTC (how every time is stored and read).

    Raises:
        InvalidInputError: not a datetime, naive, or outside the years 1 to 9999 in UTC.
    """
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInputError(field, "must be a timezone-aware datetime")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(field, "is out of range in UTC") from None


MODEL_CHARS = 200
"""Characters in a model name."""


def model_name(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MODEL_CHARS:
        raise InvalidInputError(field, f"must be a non-empty model name of at most {MODEL_CHARS} characters")
    return check_text(field, value)


def prompts(value: Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidInputError("system_prompts", "must be a list of strings")
    for i, prompt in enumerate(value):
        if not isinstance(prompt, str):
            raise InvalidInputError(f"system_prompts.{i}", "must be a string")
        check_text(f"system_prompts.{i}", prompt)
    return list(value)


def dump_parts(parts: Sequence[ContentPart]) -> list[dict[str, Any]]:
    return [part.model_dump(mode="json", exclude_none=True) for part in parts]
