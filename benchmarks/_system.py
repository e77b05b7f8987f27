"""What every benchmarked system implements, and the registry of systems by family."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from uuid import UUID

from benchmarks._data import Msg
from benchmarks._targets import Store

Family = Literal["chatmemory", "raw", "peer"]
# What a system can be asked to do; a system without one is "n/a" on that measure.
APPEND, READ_LAST, READ_ALL, RECENT, CONCURRENT = "append", "read_last", "read_all", "recent", "concurrent"
SEARCH = "search"
EVERYTHING = frozenset({APPEND, READ_LAST, READ_ALL, RECENT, CONCURRENT})


@dataclass(frozen=True)
class SchemaConversation:
    """A conversation in chatmemory's schema: shared by chatmemory and the raw drivers."""

    owner: str
    conversation_id: UUID
    history_id: UUID


class System(Protocol):
    """One way of storing chat messages, driven by the workloads."""

    name: str
    family: Family
    abilities: frozenset[str]
    # True when it reads chatmemory's schema, so it can read a database seeded in bulk.
    shares_schema: bool

    async def start(self, store: Store) -> None:
        """Connect to ``store`` (a fresh database, or one seeded in chatmemory's schema)."""

    async def conversation(self, owner: str) -> Any:
        """Start an empty conversation owned by ``owner``; returns the system's handle."""

    async def append(self, conversation: Any, batch: Sequence[Msg]) -> None:
        """Append ``batch`` to the conversation as one call."""

    async def read_last(self, conversation: Any, n: int) -> list[str]:
        """The texts of the newest ``n`` messages, oldest first."""

    async def read_all(self, conversation: Any) -> list[str]:
        """The texts of every message in order."""

    async def recent(self, owner: str, n: int) -> list[str | None]:
        """Previews of ``owner``'s ``n`` most recently updated conversations."""

    async def stop(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class Entry:
    """A system as the runner sees it: how to build it, or why it cannot be built."""

    name: str
    family: Family
    backends: frozenset[str]
    build: Callable[[], System]
    missing: str | None = None


def unsupported(name: str) -> NotImplementedError:
    """The error a system raises for a workload it has no API for."""
    return NotImplementedError(f"{name} has no API for this")
