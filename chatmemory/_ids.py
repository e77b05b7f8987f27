"""Time-ordered UUIDs (version 7, RFC 9562)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from uuid import UUID, SafeUUID

_VERSION_AND_VARIANT = 0x7 << 76 | 0x2 << 62
_RANDOM = ~(0xF << 76 | 0x3 << 62)
_new_object = object.__new__
# ``UUID`` keeps its value in two slots; their descriptors set them without the checks of
# ``UUID(int=...)`` or the lookups of ``object.__setattr__``.
_set_int: Callable[[UUID, int], None] = vars(UUID)["int"].__set__
_set_safe: Callable[[UUID, SafeUUID], None] = vars(UUID)["is_safe"].__set__
_UNKNOWN = SafeUUID.unknown


def uuid_of_int(value: int) -> UUID:
    """``UUID(int=value)`` for a value known to be a valid 128-bit UUID, at half the cost."""
    uuid = _new_object(UUID)
    _set_int(uuid, value)
    _set_safe(uuid, _UNKNOWN)
    return uuid


def uuid_of_hex(text: str) -> UUID:
    """``UUID(text)`` for the 32-digit hex SQLite stores, without re-checking its form."""
    return uuid_of_int(int(text, 16))


def as_uuid(value: UUID | str) -> UUID:
    """An id as a plan holds it: a ``UUID``, or text (the 32 hex digits SQLite stores, or any
    form ``UUID`` reads)."""
    if isinstance(value, UUID):
        return value
    return uuid_of_hex(value) if len(value) == 32 else UUID(value)


def new_id() -> UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, then random bits, so ids sort by creation time."""
    return new_ids(1)[0]


def new_ids(n: int) -> list[UUID]:
    """``n`` UUIDv7s of this millisecond, from one read of the system's random source."""
    millis = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | _VERSION_AND_VARIANT
    random = os.urandom(10 * n)
    return [
        uuid_of_int(millis | int.from_bytes(random[start : start + 10], "big") & _RANDOM)
        for start in range(0, 10 * n, 10)
    ]
