"""Synthetic data, workload sizes and timing statistics shared by every system."""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Literal, NamedTuple
from uuid import UUID

Role = Literal["user", "assistant"]
MODEL = "bench-model"
MESSAGE_CHARS = 300


class Msg(NamedTuple):
    """One synthetic message: a role and about 300 characters of text."""

    role: Role
    text: str


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does."""

    w1_turns: int = 2000
    w2_messages: int = 10_000
    w2_batch: int = 100
    w3_last: int = 50
    w3_last_reads: int = 200
    w3_all_reads: int = 10
    w4_conversations: int = 1000
    w4_messages_each: int = 20
    w4_other_users: int = 10_000
    w4_page: int = 50
    w4_reads: int = 200
    w5_writers: int = 8
    w5_turns: int = 250
    w7_searches: int = 200
    w7_broad_searches: int = 10
    warmup_turns: int = 20
    scale: tuple[int, ...] = field(default=())
    scale_conversation: int = 500
    scale_user_conversations: int = 100
    scale_user_messages_each: int = 4
    w6_lengths: tuple[int, ...] = (10, 1_000, 10_000)
    w6_turns: int = 50
    w6_warmup_turns: int = 3


FULL = Sizes()
QUICK = Sizes(
    w1_turns=20,
    w2_messages=200,
    w2_batch=50,
    w3_last=10,
    w3_last_reads=5,
    w3_all_reads=2,
    w4_conversations=30,
    w4_messages_each=3,
    w4_other_users=40,
    w4_page=10,
    w4_reads=5,
    w5_writers=3,
    w5_turns=5,
    w7_searches=5,
    w7_broad_searches=2,
    warmup_turns=2,
    scale_conversation=50,
    scale_user_conversations=20,
    scale_user_messages_each=2,
    w6_lengths=(10, 100),
    w6_turns=3,
    w6_warmup_turns=1,
)
SCALE_STORED = (1_000, 100_000, 1_000_000)
QUICK_SCALE_STORED = (300, 3_000)

_rng = random.Random(20240601)
_WORDS = [
    "".join(_rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_rng.randint(2, 9))) for _ in range(512)
]
_FILLERS = [" ".join(_rng.choice(_WORDS) for _ in range(80))[:MESSAGE_CHARS] for _ in range(64)]


def message(tag: str, index: int) -> Msg:
    """The ``index``-th message of a stream: roles alternate user/assistant, text is ~300 chars.

    ``tag`` starts the text so a reader can check order and completeness.
    """
    head = f"[{tag}:{index}] "
    role: Role = "user" if index % 2 == 0 else "assistant"
    return Msg(role, head + _FILLERS[index % len(_FILLERS)][: MESSAGE_CHARS - len(head)])


def turn(tag: str, number: int) -> list[Msg]:
    """A user message and the assistant's reply."""
    return [message(tag, 2 * number), message(tag, 2 * number + 1)]


def uuid7() -> UUID:
    """A time-ordered UUID (version 7), like the ids chatmemory writes."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | rand & ~(0xF << 76 | 0x3 << 62)
    return UUID(int=value | 0x7 << 76 | 0x2 << 62)


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` by the nearest-rank method."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(samples: list[float]) -> float:
    """The median of ``samples``."""
    return statistics.median(samples)
