"""A lock for coroutines running on any thread and any event loop."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

__all__ = ["AnyLoopLock"]

_MAX_WAIT = 0.005


class AnyLoopLock:
    """Mutual exclusion between coroutines, whatever thread or event loop runs them.

    ``asyncio.Lock`` belongs to the loop that first waits on it, and a ``threading.Lock``
    held across an ``await`` would block a loop that needs to run its holder. This lock
    never blocks: a waiter polls, yielding to its loop between tries, so a session shared
    by several threads (each with its own loop) never hangs and never raises.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    async def __aenter__(self) -> None:
        delay = 0.0
        while not self._lock.acquire(blocking=False):
            await asyncio.sleep(delay)
            delay = min(_MAX_WAIT, delay * 2 or 0.0002)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._lock.release()
