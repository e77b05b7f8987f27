"""Running the async store from LlamaIndex's synchronous and foreign-loop entry points.

A SQLAlchemy async engine belongs to the event loop its connections were made on (asyncpg
connections cannot move between loops). LlamaIndex calls a chat store from many places:
``ChatMemoryBuffer.aget`` runs the synchronous ``get_messages`` in a worker thread, and
``Memory``'s synchronous methods run its coroutines on a fresh loop in another thread. So
every store call of one object runs on its *home loop*: the one given, else the loop
running when the object was created, else a daemon thread's loop the object starts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

__all__ = ["HomeLoop"]

T = TypeVar("T")

START_TIMEOUT = 30.0
"""Seconds a call from another thread waits for the home loop to start it. A home loop that
does not start it in that time is blocked, usually by the very synchronous call waiting for
it (a synchronous LlamaIndex call made on the loop that owns the store)."""

_BLOCKED = (
    "the event loop that owns the chatmemory store is blocked, most likely by a synchronous "
    "LlamaIndex call made on it (put/get/set, Memory.from_defaults(chat_history=...)); use the "
    "async methods there, or create the store on a loop that stays free"
)


class HomeLoop:
    """Sends every coroutine to one event loop, from async and sync callers, on any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._thread: threading.Thread | None = None
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self._loop = loop
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The home loop, started in a daemon thread on first need."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="chatmemory-loop", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T]) -> _Handoff[T]:
        handoff = _Handoff(coro)
        handoff.future = asyncio.run_coroutine_threadsafe(handoff.run(), self.loop)
        return handoff

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the home loop (directly when already on it).

        Raises:
            RuntimeError: the home loop is blocked and never started the call.
        """
        if self.loop is asyncio.get_running_loop():
            return await coro
        handoff = self._submit(coro)
        await asyncio.to_thread(handoff.wait_started)
        return await asyncio.wrap_future(handoff.future)

    def call_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the home loop and block until it is done.

        Raises:
            RuntimeError: called on the home loop itself, which would wait for itself; or
                the home loop is blocked and never started the call.
        """
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            coro.close()
            raise RuntimeError(_BLOCKED)
        handoff = self._submit(coro)
        handoff.wait_started()
        return handoff.future.result()

    def close(self) -> None:
        """Stop the loop this object started, if any (idempotent)."""
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                return
            self._thread = self._loop = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class _Handoff(Generic[T]):
    """One coroutine handed to the home loop: either the loop starts it or the caller gives
    up on it, never both, so an abandoned coroutine is closed and never half-run."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.future: Future[T] = Future()
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._abandoned = False

    async def run(self) -> T:
        with self._lock:
            if self._abandoned:
                raise asyncio.CancelledError
            self._started.set()
        return await self.coro

    def wait_started(self) -> None:
        if self._started.wait(START_TIMEOUT):
            return
        with self._lock:
            if self._started.is_set():
                return
            self._abandoned = True
        self.coro.close()
        self.future.cancel()
        raise RuntimeError(_BLOCKED)
