"""Calling the async store from synchronous code and from other threads and event loops.

A store opened with ``ChatMemory.open(url)`` serves any thread and any event loop: its drivers
run on threads and loops of their own (``Scope.any_loop``). A store made with
``ChatMemory(engine)`` over a caller's asyncpg engine serves only the engine's loop (a call from
another loop fails at once with ``StorageError``), and a synchronous framework entry point needs
some loop to run on. So an adapter object sends every store call to one *home loop* through a
``HomeLoop``:

- on the home loop itself, an async call is awaited in place; a synchronous call is refused at
  once (it would block the loop it waits for);
- a home loop running in another thread runs the call; one that does not start it within
  ``start_timeout`` seconds is blocked (usually by a synchronous call made on it, waiting for
  this one), and the call is refused instead of waiting forever;
- an idle home loop (stopped between two ``run_until_complete`` calls) is run by a synchronous
  caller's thread when the store is bound to it, parallel callers taking turns (one whose turn
  does not come within ``start_timeout`` runs its call on a ``BackgroundLoop`` of the object's
  own, as does a synchronous caller running a loop of its own). Over a store that serves any
  loop it is left alone, since its owner may run it again any moment (``run_until_complete``
  would then fail, the loop running in another thread): the call runs on a ``BackgroundLoop``.
  An async caller runs the call on its own loop;
- a closed home loop (the ``asyncio.run`` that made the object returned) is replaced by a
  ``BackgroundLoop``;

The ``BackgroundLoop`` of an object over a store that serves any loop is one the process's
objects share, so a framework keeping an object per session keeps one thread in all; over a
store bound to one loop, each object starts its own, stopped by its ``close()``.
- a caller cancelled while it waits cancels the call it handed off.

Calls of one object may thus run on several loops at once (an idle home loop's callers), so
adapter state they share is guarded by an ``AnyLoopLock``, never an ``asyncio.Lock``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Coroutine
from types import TracebackType
from typing import Any, Generic, TypeVar

from chatmemory.recording import settled

__all__ = ["START_TIMEOUT", "AnyLoopLock", "BackgroundLoop", "HomeLoop"]

T = TypeVar("T")

START_TIMEOUT = 30.0
"""Seconds a call waits for a running home loop in another thread to start it."""

_LIVENESS = 0.25  # seconds between checks that the loop running a call still runs
_MAX_POLL = 0.005  # seconds between an AnyLoopLock waiter's tries, at most
_STOPPED = (
    "the event loop running a chatmemory call stopped before the call returned (a write the call "
    "had begun was seen through: do not take it as not made)"
)


class BackgroundLoop:
    """An event loop running in a daemon thread, for synchronous programs.

    Open the store on it, then hand it to an adapter (``loop=background``) so every store call
    runs on the loop that owns the store::

        with BackgroundLoop() as background:
            memory = background.run(ChatMemory.open(url))
            ...
            background.run(memory.close())

    Raises:
        RuntimeError: its thread ended before the loop ran.
    """

    def __init__(self) -> None:
        # Made in an empty context: a loop keeps the context it was made in (its wake-up
        # handle's), and the caller's may hold what owns this loop (a framework's run config
        # holding an adapter), which would then never be collected, nor this loop's thread end.
        self.loop = contextvars.Context().run(asyncio.new_event_loop)
        self._closing = threading.Lock()
        self._stopping = threading.Event()  # set once close() began cancelling the calls
        self._thread = threading.Thread(target=self._serve, name="chatmemory-loop", daemon=True)
        running = threading.Event()
        self.loop.call_soon(running.set)
        self._thread.start()
        # Handed out only once it runs: a loop not running yet looks idle, and a HomeLoop
        # caller would run it in its own thread, under the thread about to run it.
        while not running.wait(_LIVENESS):
            if not self._thread.is_alive():
                raise RuntimeError("the BackgroundLoop's thread ended before its loop ran")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        if self._stopping.is_set():
            # Calls handed over as it stopped: each is started (and refused) or cancelled.
            self.loop.run_until_complete(asyncio.sleep(0))
            leftover = asyncio.all_tasks(self.loop)
            for task in leftover:
                task.cancel()
            if leftover:
                self.loop.run_until_complete(asyncio.wait(leftover, timeout=_LIVENESS))
            self.loop.close()  # close() may have been called here, where it cannot wait for this

    def run(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` on this loop and wait for its result (from any other thread).

        Raises:
            RuntimeError: called from this loop's own thread, which would wait forever, or the
                loop is closed, or it closed before the call ended (the call is cancelled).
        """
        if threading.current_thread() is self._thread:
            _discard(awaitable)
            raise RuntimeError("BackgroundLoop.run() called from its own thread")
        waiting = _wait(awaitable)
        try:
            future = asyncio.run_coroutine_threadsafe(waiting, self.loop)
        except RuntimeError:  # the loop is closed
            waiting.close()
            _discard(awaitable)
            raise RuntimeError("BackgroundLoop.run() called on a closed loop") from None
        while not concurrent.futures.wait([future], timeout=_LIVENESS)[0]:
            if not self._thread.is_alive() and not future.done():
                future.cancel()
                if inspect.getcoroutinestate(waiting) == inspect.CORO_CREATED:
                    waiting.close()
                    _discard(awaitable)
                raise RuntimeError("BackgroundLoop closed before the call ended")
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if not self._stopping.is_set():
                raise
            raise RuntimeError("BackgroundLoop closed before the call ended") from None

    def close(self) -> None:
        """Cancel the calls still running, then stop the loop and its thread (idempotent).

        Called from the loop's own thread, it only begins that and returns.
        """
        with self._closing:
            if not self._stopping.is_set() and not self.loop.is_closed():
                self._stopping.set()
                self.loop.call_soon_threadsafe(self._shut_down)
        if threading.current_thread() is not self._thread:
            self._thread.join()
            self.loop.close()

    def _shut_down(self) -> None:
        async def cancel_then_stop() -> None:
            # The calls first, each left to end as a cancelled call does: one that shields work
            # from its cancellation (a change that must not be left half done) waits for it.
            # Then whatever else runs here. A task refusing to end is left behind rather than
            # waited for forever.
            # Calls handed over from now on are refused before they start, so none starts
            # after its cancellation and is then stopped halfway (holding an adapter's lock).
            with _CALLS_GUARD:
                _CLOSING.add(self.loop)
            deadline = self.loop.time() + START_TIMEOUT
            for cancelling in (_calls_on(self.loop), asyncio.all_tasks()):
                tasks = cancelling - {asyncio.current_task()}
                for task in tasks:
                    task.cancel()
                if tasks:
                    await asyncio.wait(tasks, timeout=max(0.0, deadline - self.loop.time()))
            self.loop.stop()

        self.loop.create_task(cancel_then_stop())

    def __enter__(self) -> BackgroundLoop:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _wait(awaitable: Awaitable[T]) -> T:
    try:
        _register_call()
    except asyncio.CancelledError:  # refused, never started, on a loop that is closing
        _discard(awaitable)
        raise
    return await awaitable


_CALLS: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()  # the tasks running handed calls
_CALLS_GUARD = threading.Lock()  # loops of several threads register theirs


_CLOSING: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()  # BackgroundLoops closing


def _register_call() -> None:
    """Count the running task as a handed call of its loop.

    Raises:
        asyncio.CancelledError: the loop is closing (the call is refused before it starts).
    """
    task = asyncio.current_task()
    with _CALLS_GUARD:
        if asyncio.get_running_loop() in _CLOSING:
            raise asyncio.CancelledError
        if task is not None:
            _CALLS.add(task)


def _closing(loop: asyncio.AbstractEventLoop) -> bool:
    with _CALLS_GUARD:
        return loop in _CLOSING


def _calls_on(loop: asyncio.AbstractEventLoop) -> set[asyncio.Task[Any]]:
    """The unfinished tasks running calls handed to ``loop``."""
    with _CALLS_GUARD:
        return {task for task in _CALLS if task.get_loop() is loop and not task.done()}


def _discard(awaitable: Awaitable[Any]) -> None:
    """Close a coroutine that will never run, so it is not reported as never awaited."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


class HomeLoop:
    """Sends every coroutine of one adapter object to its home loop, from any thread or loop.

    Args:
        loop: the home loop (or ``BackgroundLoop``); ``None`` for the loop running now, else a
            ``BackgroundLoop`` started on first need (shared with ``any_loop``).
        hint: what a framework user should do instead of a synchronous call on the home loop,
            appended to the errors refusing one.
        start_timeout: seconds a running home loop in another thread has to start a call.
        any_loop: the store serves any thread and event loop (``Scope.any_loop``), so an idle
            home loop is never borrowed (see the module's docstring).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | BackgroundLoop | None,
        *,
        hint: str = "use the async API there, or call from another thread",
        start_timeout: float = START_TIMEOUT,
        any_loop: bool = False,
    ) -> None:
        if isinstance(loop, BackgroundLoop):
            loop = loop.loop
        if loop is None:
            loop = _running_loop()
        self._loop = loop
        self._owned: BackgroundLoop | None = None
        self._finalizer: weakref.finalize[[], HomeLoop] | None = None
        self._owning = threading.Lock()
        # Held by the thread running the idle home loop, so parallel synchronous callers take
        # turns rather than find it stopping under them.
        self._driving = threading.Lock()
        self._driven = False  # whether the home loop runs because a caller holding _driving runs it
        self.hint = hint
        self.start_timeout = start_timeout
        self.any_loop = any_loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The home loop; a background loop of this object's own when none was given or it closed."""
        home = self._loop
        if home is None or home.is_closed():
            home = self._loop = self._background()
        return home

    def _background(self) -> asyncio.AbstractEventLoop:
        if self.any_loop:
            return _shared_loop()
        with self._owning:
            if self._owned is None:
                self._owned = BackgroundLoop()
                # An adapter dropped without close() must not leave a thread behind per object.
                self._finalizer = weakref.finalize(self, self._owned.close)
                self._finalizer.atexit = False  # daemon: exit ends it
            return self._owned.loop

    async def call(self, coro: Coroutine[Any, Any, T], *, finish: bool = False) -> T:
        """Await ``coro`` on the home loop (in place when on it, or when it is idle).

        A caller cancelled meanwhile cancels ``coro`` (or, not started yet, drops it); with
        ``finish``, one that started (a change made of several writes) is awaited to its end
        first, and only then does the cancellation go on.

        Raises:
            RuntimeError: the home loop is blocked and did not start ``coro`` in time, or it
                stopped while running it.
        """
        home = self.loop
        if home is asyncio.get_running_loop() or not home.is_running() or self._driven:
            return await (settled(coro) if finish else coro)
        handoff = _Handoff(coro, home, self.start_timeout)
        waiter = asyncio.wrap_future(handoff.future)
        try:
            while not (await asyncio.wait({waiter}, timeout=self._tick))[0]:
                if self._taken_back(handoff):
                    break
            else:
                return handoff.result()
        except BaseException:
            if finish and not handoff.take_back():
                await _seen_through(handoff, self._tick)
                raise
            handoff.abandon()
            raise
        return await self.call(coro, finish=finish)  # the home loop stopped before starting it

    def call_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the home loop and block until it is done.

        Raises:
            RuntimeError: called on the home loop itself (it would wait for itself), or the
                home loop is blocked and did not start ``coro`` in time, or it stopped while
                running it.
        """
        running = _running_loop()
        home = self.loop
        if running is home:
            coro.close()
            raise RuntimeError(
                "a synchronous call on the event loop that owns the chatmemory store would block it; "
                + self.hint
            )
        # A BackgroundLoop that stopped is closing: never run it (it drains and closes itself).
        idle = not self.any_loop and (self._driven or not home.is_running()) and not _closing(home)
        if running is None and idle and self._driving.acquire(timeout=self.start_timeout):
            try:
                if not home.is_running() and not home.is_closed():
                    self._driven = True
                    try:
                        return home.run_until_complete(coro)
                    finally:
                        self._driven = False
            finally:
                self._driving.release()
        # An idle loop cannot run inside this thread's running loop, one another caller runs
        # stops when that caller's call ends (which may be waiting for this one), and an idle one
        # over a store that serves any loop is left for its owner to run again.
        if self._driven or not home.is_running():
            home = self._background()
        handoff = _Handoff(coro, home, self.start_timeout)
        try:
            while not concurrent.futures.wait([handoff.future], timeout=self._tick)[0]:
                if self._taken_back(handoff):
                    break
            else:
                return handoff.result()
        except BaseException:
            handoff.abandon()
            raise
        return self.call_sync(coro)  # the home loop stopped before starting it

    @property
    def _tick(self) -> float:
        return min(_LIVENESS, self.start_timeout)

    def _taken_back(self, handoff: _Handoff[T]) -> bool:
        """Whether the caller got ``handoff``'s coroutine back to run it elsewhere, because the
        loop stopped before starting it; called while the call has not finished.

        Raises:
            RuntimeError: the loop stopped while running the call, or never started it in time.
        """
        if not handoff.loop.is_running():
            if handoff.take_back():
                return True
            raise RuntimeError(_STOPPED)
        if time.monotonic() >= handoff.deadline and handoff.take_back():
            handoff.coro.close()
            raise RuntimeError(
                "the event loop that owns the chatmemory store is blocked: it did not start a call "
                f"within {self.start_timeout:g} s, most likely because a synchronous call made on it "
                f"waits for this one; {self.hint}"
            )
        return False

    def close(self) -> None:
        """Stop the background loop this object started, if any (idempotent). The loop objects
        over a store that serves any loop share is never stopped."""
        with self._owning:
            owned, self._owned = self._owned, None
            if owned is not None:
                assert self._finalizer is not None
                self._finalizer.detach()  # an object closed and used again keeps one at most
        if owned is not None:
            if self._loop is owned.loop:
                self._loop = None
            owned.close()


_SHARED: tuple[int, BackgroundLoop] | None = None  # the process's (pid) shared background loop
_SHARED_GUARD = threading.Lock()


def _shared_loop() -> asyncio.AbstractEventLoop:
    """The background loop every object over a store that serves any loop shares in this
    process: one thread however many objects there are (a framework keeping a history object
    per session made a thread and three file descriptors per session). Started on first need,
    again in a forked child (whose copy of it has no thread), and never stopped: a daemon, it
    ends with the process."""
    global _SHARED
    with _SHARED_GUARD:
        if _SHARED is None or _SHARED[0] != os.getpid() or _SHARED[1].loop.is_closed():
            _SHARED = (os.getpid(), BackgroundLoop())
        return _SHARED[1].loop


async def _seen_through(handoff: _Handoff[Any], tick: float) -> None:
    """Wait, however often cancelled, until a started handed-off call ends, or its loop stops."""
    while not handoff.future.done() and handoff.loop.is_running():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(tick / 10)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Handoff(Generic[T]):
    """One coroutine handed to a running loop: either the loop starts it or the caller takes
    it back, never both, so a coroutine given up on is never half-run."""

    def __init__(self, coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.coro = coro
        self.loop = loop
        self.deadline = time.monotonic() + timeout
        self._lock = threading.Lock()
        self._started = self._returned = False
        self._runner = self._run()
        try:
            self.future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(self._runner, loop)
        except RuntimeError:  # the loop is closed
            self._runner.close()
            raise

    async def _run(self) -> T:
        try:
            _register_call()
        except asyncio.CancelledError:  # refused, never started, on a loop that is closing
            self.coro.close()
            raise
        with self._lock:
            if self._returned:
                raise asyncio.CancelledError
            self._started = True
        return await self.coro

    def result(self) -> T:
        """The finished call's outcome; a call its loop cancelled (shutting down) is refused.

        Raises:
            RuntimeError: the loop cancelled the call before it ended.
        """
        if self.future.cancelled():
            raise RuntimeError(_STOPPED)
        return self.future.result()

    def take_back(self) -> bool:
        """Whether the coroutine is the caller's again (the loop will not start it)."""
        with self._lock:
            self._returned = self._returned or not self._started
        if self._returned and not self.loop.is_closed():  # a closed loop's calls are over
            self.future.cancel()
        elif self._returned:  # closed before it ever ran the call: it never will
            self._runner.close()
        return self._returned

    def abandon(self) -> None:
        """Give up on the call: close it if not started, else cancel it on its loop."""
        if self.take_back():
            self.coro.close()
        elif not self.loop.is_closed():  # a closed loop's calls have ended (or will never)
            self.future.cancel()


class AnyLoopLock:
    """Mutual exclusion between coroutines, whatever thread or event loop runs them.

    An ``asyncio.Lock`` belongs to the loop that first waits on it, and a ``threading.Lock``
    held across an ``await`` blocks a loop that may have to run its holder. A waiter here polls,
    yielding to its loop between tries, so it never blocks and never hangs; waiters get the lock
    in the order they asked for it, so a holder taking it again at once cannot starve them.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()  # held only for instants, never across an await
        self._held = False
        self._waiters: deque[object] = deque()

    async def __aenter__(self) -> None:
        turn = object()
        with self._guard:
            if not self._held and not self._waiters:
                self._held = True
                return
            self._waiters.append(turn)
        delay = 0.0
        try:
            while True:
                await asyncio.sleep(delay)
                delay = min(_MAX_POLL, delay * 2 or 0.0002)
                with self._guard:
                    if not self._held and self._waiters[0] is turn:
                        self._waiters.popleft()
                        self._held = True
                        return
        except BaseException:  # cancelled while waiting: give up the place in the queue
            with self._guard:
                self._waiters.remove(turn)
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._guard:
            self._held = False
