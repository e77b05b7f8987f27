"""What one process knows of the invocations it records: their histories and model calls."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

from chatmemory import Principal
from chatmemory.loops import AnyLoopLock

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")
_T = TypeVar("_T")


async def to_the_end(work: Coroutine[Any, Any, _T]) -> _T:
    """Await ``work``; if cancelled meanwhile, let it finish before the cancel goes on.

    A session write is several store calls (the session, then the shared state): cut short,
    it would leave half of itself stored.
    """
    running = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await running
        raise


class Recent(Generic[_K, _V]):
    """A mapping that keeps only the ``size`` most recently set keys, for any number of threads
    at once (a service serves runners on threads with event loops of their own)."""

    def __init__(self, size: int = 1024) -> None:
        self._items: OrderedDict[_K, _V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: _K) -> _V | None:
        with self._lock:
            return self._items.get(key)

    def set(self, key: _K, value: _V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def items(self) -> list[tuple[_K, _V]]:
        with self._lock:
            return list(self._items.items())

    def pop(self, key: _K) -> _V | None:
        with self._lock:
            return self._items.pop(key, None)

    def pop_where(self, matches: Callable[[_K], bool]) -> list[_V]:
        """Remove the entries whose key ``matches``; their values."""
        with self._lock:
            return [self._items.pop(key) for key in list(self._items) if matches(key)]


class KeyedLocks(Generic[_K]):
    """A lock per key, kept while someone holds it or waits for it, for coroutines of any thread
    and event loop (see ``chatmemory.loops.AnyLoopLock``)."""

    def __init__(self) -> None:
        self._locks: dict[_K, tuple[AnyLoopLock, int]] = {}
        self._guard = threading.Lock()  # held only for instants, never across an await

    @contextlib.asynccontextmanager
    async def hold(self, key: _K) -> AsyncIterator[None]:
        with self._guard:
            lock, users = self._locks.get(key) or (AnyLoopLock(), 0)
            self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


@dataclass
class Run:
    """An invocation's history, as this process records it."""

    history_id: UUID
    model: str
    principal: Principal
    usage: dict[str, int] = field(default_factory=dict)
    ended: bool = False
    """Closed: by its reported end, or by the session's next invocation."""

    def add_usage(self, usage: Mapping[str, Any] | None) -> None:
        for name, count in (usage or {}).items():
            if isinstance(count, int) and not isinstance(count, bool):
                self.usage[name] = self.usage.get(name, 0) + count


class ModelCalls:
    """The model (and system prompt) each agent of each invocation was last seen calling."""

    def __init__(self) -> None:
        self._calls: Recent[tuple[str, str], tuple[str, str | None]] = Recent()

    def note(self, invocation_id: str, agent_name: str, model: str, system_prompt: str | None) -> None:
        self._calls.set((invocation_id, agent_name), (model, system_prompt))

    def model(self, invocation_id: str, agent_name: str) -> str | None:
        noted = self._calls.get((invocation_id, agent_name))
        return noted[0] if noted and noted[0] else None

    def prompts(self, invocation_id: str, model: str | None) -> list[str] | None:
        for (invocation, _), (called, prompt) in self._calls.items():
            if invocation == invocation_id and called == model and prompt:
                return [prompt]
        return None
