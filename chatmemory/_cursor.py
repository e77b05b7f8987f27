"""Opaque keyset cursors. They carry a position only: every page is still filtered by principal."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from chatmemory.errors import InvalidInputError

# ``json.dumps`` with separators builds an encoder per call; this one is built once.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def encode(kind: str, *position: Any) -> str:
    raw = _compact_json([kind, *position]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(kind: str, cursor: str, size: int) -> list[Any]:
    """The position stored by ``encode(kind, ...)`` with ``size`` values.

    Raises:
        InvalidInputError: the cursor is malformed or belongs to another kind of listing.
    """
    try:
        if not isinstance(cursor, str) or len(cursor) > 1000:
            raise ValueError
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, list) or data[0] != kind or len(data) != size + 1:
            raise ValueError
    except (ValueError, binascii.Error, IndexError, TypeError):
        raise InvalidInputError("cursor", "is not a cursor from this listing") from None
    return data[1:]


def timestamp(value: object) -> datetime:
    """A timezone-aware timestamp stored in a cursor, in UTC.

    Raises:
        InvalidInputError: it is not one.
    """
    try:
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    raise InvalidInputError("cursor", "is not a cursor from this listing")


def sequence(value: object) -> int:
    """A ``seq`` stored in a cursor (a non-negative 64-bit integer).

    Raises:
        InvalidInputError: it is not one.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidInputError("cursor", "is not a cursor from this listing")
    return value
