"""Time-ordered UUIDs (version 7, RFC 9562)."""

from __future__ import annotations

import os
import time
from uuid import UUID, SafeUUID

_VERSION_AND_VARIANT = 0x7 << 76 | 0x2 << 62
_RANDOM = ~(0xF << 76 | 0x3 << 62)
_new_object = object.__new__
_set = object.__setattr__


def new_id() -> UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, then random bits, so ids sort by creation time."""
    return new_ids(1)[0]


def new_ids(n: int) -> list[UUID]:
    """``n`` UUIDv7s of this millisecond, from one read of the system's random source."""
    millis = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | _VERSION_AND_VARIANT
    random = os.urandom(10 * n)
    ids = []
    for start in range(0, 10 * n, 10):
        # UUID(int=...) re-checks a value built to be valid; this sets the same two slots.
        value = _new_object(UUID)
        _set(value, "int", millis | int.from_bytes(random[start : start + 10], "big") & _RANDOM)
        _set(value, "is_safe", SafeUUID.unknown)
        ids.append(value)
    return ids
