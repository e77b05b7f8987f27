"""Running the async store from LangChain's synchronous entry points.

A SQLAlchemy async engine belongs to the event loop its connections were made on (asyncpg
connections cannot be used from another loop, and chatmemory's SQLite write queue is an
``asyncio.Lock``). So every store call of one middleware or history object runs on one
*home loop*: the one given, else the loop running when the object was created, else a
``BackgroundLoop`` the object starts and owns.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["BackgroundLoop"]

T = TypeVar("T")

_LIVENESS = 0.25  # seconds between checks that the loop running a call still runs


class BackgroundLoop:
    """An event loop running in a daemon thread, for synchronous programs.

    Open the store on it, then hand it to ``ChatMemoryMiddleware(..., loop=...)`` so every
    store call runs on the loop that owns the engine::

        with BackgroundLoop() as background:
            memory = background.run(ChatMemory.open(url))
            ...
            background.run(memory.close())
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="chatmemory-loop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` on this loop and wait for its result (from any other thread).

        Raises:
            RuntimeError: called from this loop's own thread, which would wait forever.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("BackgroundLoop.run() called from its own thread")
        return asyncio.run_coroutine_threadsafe(_wait(awaitable), self.loop).result()

    def close(self) -> None:
        """Stop the loop and its thread (idempotent)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def __enter__(self) -> BackgroundLoop:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _wait(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _stopped() -> RuntimeError:
    return RuntimeError("the event loop running a chatmemory call stopped before the call ended")


class HomeLoop:
    """Sends every coroutine to one event loop, from async and sync callers alike."""

    def __init__(self, loop: asyncio.AbstractEventLoop | BackgroundLoop | None) -> None:
        self._owned: BackgroundLoop | None = None
        # Held by the thread running the idle home loop itself, so parallel sync calls (a
        # graph's parallel tool calls) take turns rather than find it stopping under them.
        self._driving = threading.Lock()
        if isinstance(loop, BackgroundLoop):
            loop = loop.loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The home loop, started in a background thread on first need."""
        if self._loop is None:
            self._owned = BackgroundLoop()
            self._loop = self._owned.loop
        return self._loop

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the home loop (directly when already on it).

        A home loop that is not running (stopped between two ``run_until_complete`` calls, or
        closed when ``asyncio.run`` returned) would never run it, so it runs here instead: a
        store opened from a URL serves any loop, and an engine bound to the idle loop raises
        its own error rather than wait.

        Raises:
            RuntimeError: the home loop stopped while running ``coro``.
        """
        home = self.loop
        if home is asyncio.get_running_loop() or not home.is_running() or self._driving.locked():
            return await coro
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, home)
        waiter = asyncio.wrap_future(future)
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=_LIVENESS)
                if done:
                    return waiter.result()
                if not home.is_running():
                    raise _stopped()
        finally:
            waiter.cancel()  # the caller gave up (or the loop stopped): so does the call

    def call_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the home loop and block until it is done.

        An idle home loop (not running, not closed) runs it in the calling thread; a closed
        one is replaced by a background loop this object starts.

        Raises:
            RuntimeError: called on the home loop itself (a synchronous call there would
                block the loop it waits for; use the async API from async code), or the home
                loop stopped while running ``coro``.
        """
        home = self.loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is home:
            coro.close()
            raise RuntimeError(
                "a synchronous LangChain call (invoke/stream) ran on the event loop that owns the "
                "chatmemory store; use ainvoke/astream there, or call invoke from another thread"
            )
        if running is None and not home.is_closed():
            with self._driving:
                if not home.is_running():
                    return home.run_until_complete(coro)
        if not home.is_running():
            if home.is_closed():
                self._loop = None  # from now on, a background loop of this object's own
                home = self.loop
            else:  # an idle loop cannot run inside another thread's running loop
                home = self._background()
        future = asyncio.run_coroutine_threadsafe(coro, home)
        while True:
            try:
                return future.result(timeout=_LIVENESS)
            except TimeoutError:
                if not home.is_running():
                    future.cancel()
                    raise _stopped() from None

    def _background(self) -> asyncio.AbstractEventLoop:
        """A loop of this object's own, for calls its idle home loop cannot run."""
        if self._owned is None:
            self._owned = BackgroundLoop()
        return self._owned.loop

    def close(self) -> None:
        """Stop the background loop if this object started one."""
        if self._owned is not None:
            self._owned.close()
            self._owned = None
            self._loop = None
