"""``chatmemory.loops``: store calls sent to an object's home loop from any thread or event loop,
never waiting for a loop that cannot serve them. Each test runs what could wait forever under a
bound, so a regression fails instead of hanging the suite."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import inspect
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import pytest

from chatmemory.loops import AnyLoopLock, BackgroundLoop, HomeLoop

T = TypeVar("T")


def bounded(program: Callable[[], T], timeout: float = 10) -> T:
    """``program()`` in a daemon thread, failing the test if it takes longer than ``timeout``."""
    outcome: Future[T] = Future()

    def run() -> None:
        try:
            outcome.set_result(program())
        except BaseException as error:  # handed to the test
            outcome.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    return outcome.result(timeout=timeout)


class Forever:
    """Calls that wait until cancelled, telling when one started and when it was cancelled."""

    def __init__(self) -> None:
        self.started, self.cancelled = threading.Event(), threading.Event()

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def where() -> asyncio.AbstractEventLoop:
    """The loop a call ran on."""
    await asyncio.sleep(0.01)
    return asyncio.get_running_loop()


async def home_made_here() -> tuple[HomeLoop, asyncio.AbstractEventLoop]:
    return HomeLoop(None), asyncio.get_running_loop()


def test_an_idle_home_loop_is_run_by_sync_callers_taking_turns() -> None:
    def program() -> tuple[asyncio.AbstractEventLoop, list[asyncio.AbstractEventLoop]]:
        loop = asyncio.new_event_loop()
        try:
            home, made_on = loop.run_until_complete(home_made_here())
            assert home.loop is made_on is loop
            seen = [home.call_sync(where())]
            with ThreadPoolExecutor(4) as pool:  # parallel sync callers, none with a loop
                seen += pool.map(lambda _: home.call_sync(where()), range(8))
            foreign = asyncio.run(home.call(where()))  # an async caller runs it on its own loop
            assert foreign is not loop and foreign.is_closed()
            assert loop.run_until_complete(home.call(where())) is loop  # the loop serves again
            return loop, seen
        finally:
            loop.close()

    loop, seen = bounded(program)
    assert seen == [loop] * 9


def test_a_background_loop_that_starts_slowly_is_not_run_by_its_first_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loop is handed out only once its thread runs it: one not running yet looks idle, and
    a synchronous caller would run it in its own thread, under the thread about to run it."""
    serve = BackgroundLoop._serve

    def slow_to_start(self: BackgroundLoop) -> None:
        time.sleep(0.2)  # as a busy machine may delay a new thread
        serve(self)

    async def serving_thread() -> threading.Thread:
        return threading.current_thread()

    monkeypatch.setattr(BackgroundLoop, "_serve", slow_to_start)

    def program() -> threading.Thread:
        home = HomeLoop(None)  # no loop running: a background loop of its own
        try:
            return home.call_sync(serving_thread())
        finally:
            home.close()

    assert bounded(program).name == "chatmemory-loop"


def test_a_closed_home_loop_is_replaced_by_a_background_loop_of_its_own() -> None:
    def program() -> list[asyncio.AbstractEventLoop]:
        home, closed = asyncio.run(home_made_here())
        assert closed.is_closed()
        seen = [home.call_sync(where()), asyncio.run(home.call(where())), home.call_sync(where())]
        assert closed not in seen and home.loop is seen[0]
        home.close()
        return seen

    first, *rest = bounded(program)
    assert rest == [first, first] and first.is_closed()


def test_a_blocked_home_loop_refuses_calls_within_the_start_timeout() -> None:
    ran: list[str] = []

    async def record(name: str) -> None:
        ran.append(name)

    with BackgroundLoop() as background:
        home = HomeLoop(background, hint="do this instead", start_timeout=0.2)
        release = threading.Event()
        # A synchronous call made on the loop, waiting for what the loop would have to run.
        background.loop.call_soon_threadsafe(release.wait, 30)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=r"is blocked: .* within 0.2 s.*; do this instead"):
            bounded(lambda: home.call_sync(record("sync")))
        with pytest.raises(RuntimeError, match="is blocked"):
            bounded(lambda: asyncio.run(home.call(record("async"))))
        assert time.monotonic() - started < 5
        release.set()
        background.run(asyncio.sleep(0.05))  # the loop sees the calls given up on
        assert ran == []  # neither ever runs
        bounded(lambda: home.call_sync(record("later")))
    assert ran == ["later"]


async def test_a_synchronous_call_on_the_home_loop_is_refused_at_once() -> None:
    home = HomeLoop(None, hint="use the async API there")
    call = where()
    with pytest.raises(RuntimeError, match="would block it; use the async API there"):
        home.call_sync(call)
    assert inspect.getcoroutinestate(call) == inspect.CORO_CLOSED
    assert await asyncio.wait_for(home.call(where()), 5) is asyncio.get_running_loop()


def test_calls_from_several_threads_each_with_its_own_loop_run_on_the_home_loop() -> None:
    with BackgroundLoop() as background:
        home = HomeLoop(background)

        async def caller() -> list[asyncio.AbstractEventLoop]:
            seen = list(await asyncio.gather(*(home.call(where()) for _ in range(5))))
            seen.append(home.call_sync(where()))  # a sync call blocking this foreign loop
            return seen

        def program() -> list[asyncio.AbstractEventLoop]:
            with ThreadPoolExecutor(6) as pool:
                return [loop for seen in pool.map(lambda _: asyncio.run(caller()), range(6)) for loop in seen]

        assert bounded(program) == [background.loop] * 36


async def test_cancelling_the_caller_cancels_the_call_it_handed_off() -> None:
    forever = Forever()
    started, cancelled = forever.started, forever.cancelled
    with BackgroundLoop() as background:
        home = HomeLoop(background)
        waiting = asyncio.create_task(home.call(forever()))
        assert await asyncio.to_thread(started.wait, 5)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 5)
        assert await asyncio.to_thread(cancelled.wait, 5)

        # Cancelled before its blocked home loop started it: the call never runs.
        started.clear()
        release = threading.Event()
        background.loop.call_soon_threadsafe(release.wait, 30)
        waiting = asyncio.create_task(home.call(forever()))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 5)
        release.set()
        await asyncio.to_thread(background.run, asyncio.sleep(0.05))  # it sees the call given up on
        assert not started.is_set()


def test_a_call_its_home_loop_stopped_before_starting_runs_in_the_caller() -> None:
    def program() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        loop = asyncio.new_event_loop()
        release = threading.Event()

        def block_then_stop() -> None:
            release.wait(30)
            loop.stop()

        loop.call_soon(block_then_stop)
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        while not loop.is_running():
            time.sleep(0.01)
        threading.Timer(0.1, release.set).start()
        try:
            return loop, HomeLoop(loop).call_sync(where())
        finally:
            thread.join()
            loop.close()

    loop, ran_on = bounded(program)
    assert ran_on is loop


def test_a_call_whose_loop_stops_under_it_fails() -> None:
    async def stop_then_wait() -> None:
        asyncio.get_running_loop().stop()
        await asyncio.sleep(60)

    stopped = pytest.raises(RuntimeError, match="stopped before the call returned")
    with BackgroundLoop() as background, stopped:
        bounded(lambda: HomeLoop(background).call_sync(stop_then_wait()))


def test_an_any_loop_lock_excludes_coroutines_of_several_threads_and_loops() -> None:
    lock, holders, most = AnyLoopLock(), [0], [0]

    async def hold() -> None:
        for _ in range(20):
            async with lock:
                holders[0] += 1
                most[0] = max(most[0], holders[0])
                await asyncio.sleep(0.001)
                holders[0] -= 1

    async def caller() -> None:
        await asyncio.gather(hold(), hold())

    def program() -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: asyncio.run(caller()), range(4)))

    bounded(program, timeout=20)
    assert most == [1] and holders == [0]


def test_a_background_loop_closed_under_a_run_fails_the_run_instead_of_hanging() -> None:
    forever = Forever()
    started, cancelled = forever.started, forever.cancelled
    background = BackgroundLoop()
    running: Future[None] = Future()

    def run() -> None:
        try:
            running.set_result(background.run(forever()))
        except BaseException as error:  # handed to the test
            running.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    assert started.wait(10)  # the call runs on the loop when the loop closes
    bounded(background.close)
    with pytest.raises(RuntimeError, match="closed"):
        running.result(timeout=5)
    assert cancelled.is_set()  # the call was cancelled on its loop, not dropped there
    late = forever()
    with pytest.raises(RuntimeError, match="closed"):
        background.run(late)
    assert inspect.getcoroutinestate(late) == inspect.CORO_CLOSED


def test_closing_a_home_loop_under_its_calls_fails_them_with_a_clear_error() -> None:
    sync_run, async_run = Forever(), Forever()
    home = HomeLoop(None)  # no loop running: a background loop of its own
    with ThreadPoolExecutor(2) as pool:
        sync_call = pool.submit(home.call_sync, sync_run())
        async_call = pool.submit(asyncio.run, home.call(async_run()))
        assert sync_run.started.wait(5) and async_run.started.wait(5)
        bounded(home.close)
        for call in (sync_call, async_call):
            with pytest.raises(RuntimeError, match="stopped before the call returned"):
                call.result(timeout=5)
    assert sync_run.cancelled.wait(1) and async_run.cancelled.wait(1)


def test_a_call_driving_the_idle_home_loop_may_wait_for_a_sync_call_of_another_thread() -> None:
    def program() -> list[asyncio.AbstractEventLoop]:
        loop = asyncio.new_event_loop()
        try:
            home, _ = loop.run_until_complete(home_made_here())
            home.start_timeout = 0.2

            async def waits_for_another_thread() -> list[asyncio.AbstractEventLoop]:
                # The driven call needs a synchronous call made meanwhile by a worker thread.
                other = await asyncio.get_running_loop().run_in_executor(None, home.call_sync, where())
                return [other, await where()]

            return [*home.call_sync(waits_for_another_thread()), loop]
        finally:
            home.close()
            loop.close()

    other, driven, loop = bounded(program)
    assert driven is loop and other is not loop  # its turn did not come: a loop of the object's own


def test_an_any_loop_lock_serves_its_waiters_in_turn() -> None:
    lock, done = AnyLoopLock(), threading.Event()

    async def hog() -> None:  # takes the lock again as soon as it lets it go
        while not done.is_set():
            async with lock:
                await asyncio.sleep(0.0005)

    async def wait_once() -> float:
        await asyncio.sleep(0.05)
        started = time.monotonic()
        async with lock:
            return time.monotonic() - started

    def program() -> float:
        with ThreadPoolExecutor(2) as pool:
            hogging = pool.submit(asyncio.run, hog())
            try:
                return pool.submit(asyncio.run, asyncio.wait_for(wait_once(), 5)).result()
            finally:
                done.set()
                hogging.result()

    assert bounded(program) < 1


def test_the_background_loop_of_a_home_loop_nobody_closed_stops_when_it_is_collected() -> None:
    async def serving_thread() -> threading.Thread:
        return threading.current_thread()

    def program() -> threading.Thread:
        home = HomeLoop(None)  # no loop running: a background loop of its own, never closed
        thread = home.call_sync(serving_thread())
        assert thread is not threading.current_thread() and thread.is_alive()
        del home
        gc.collect()
        thread.join(5)
        return thread

    assert not bounded(program).is_alive()


def test_a_sync_call_from_another_loop_while_a_caller_runs_the_idle_home_loop_completes() -> None:
    async def slow(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    def program() -> list[float]:
        loop = asyncio.new_event_loop()
        try:
            home, _ = loop.run_until_complete(home_made_here())

            async def from_another_loop() -> float:
                await asyncio.sleep(0.05)  # while the other thread runs the idle home loop
                return home.call_sync(slow(0.4))

            with ThreadPoolExecutor(2) as pool:
                driving = pool.submit(home.call_sync, slow(0.2))
                other = pool.submit(asyncio.run, from_another_loop())
                return [driving.result(), other.result()]
        finally:
            home.close()
            loop.close()

    assert bounded(program) == [0.2, 0.4]


def test_sync_calls_over_a_store_that_serves_any_loop_never_run_the_programs_idle_loop() -> None:
    """A worker thread's synchronous calls (LlamaIndex writes chat history from a thread of its
    own) while the thread that made the object goes on with ``run_until_complete`` on its loop:
    borrowing that loop while it is idle would make the owner's next ``run_until_complete``
    fail with "This event loop is already running". A call it finds running is handed to it.
    An async call is awaited where the home loop is idle."""

    def program() -> tuple[asyncio.AbstractEventLoop, set[asyncio.AbstractEventLoop], list[str], int]:
        loop = asyncio.new_event_loop()
        try:

            async def made_here() -> HomeLoop:
                return HomeLoop(None, any_loop=True)

            home = loop.run_until_complete(made_here())
            seen: set[asyncio.AbstractEventLoop] = set()
            worker = threading.Thread(target=lambda: seen.update(home.call_sync(where()) for _ in range(20)))
            worker.start()
            errors, turns = [], 0
            while worker.is_alive():
                try:
                    loop.run_until_complete(asyncio.sleep(0.001))  # the program's own work
                    turns += 1
                except RuntimeError as error:
                    errors.append(str(error))
            worker.join()
            assert loop.run_until_complete(home.call(where())) is loop
            assert asyncio.run(home.call(where())) is not loop
            home.close()
            return loop, seen, errors, turns
        finally:
            loop.close()

    loop, seen, errors, turns = bounded(program)
    assert errors == []
    # Each ran on the home loop while its owner ran it, else on the object's background loop.
    assert turns > 0 and len(seen - {loop}) == 1


def test_objects_over_a_store_that_serves_any_loop_share_one_background_loop() -> None:
    """A framework keeping an object per session (LangChain's dict of histories), each made
    outside any running loop and called synchronously: one thread for all of them, which
    closing one leaves running for the others. Each had a thread and an event loop of its own
    (three file descriptors), and a few hundred sessions ran out of descriptors."""

    def program() -> tuple[int, set[asyncio.AbstractEventLoop]]:
        before = threading.active_count()
        homes = [HomeLoop(None, any_loop=True) for _ in range(50)]
        seen = {home.call_sync(where()) for home in homes}
        homes[0].close()
        seen |= {home.call_sync(where()) for home in homes}
        return threading.active_count() - before, seen

    added, seen = bounded(program)
    assert added <= 1 and len(seen) == 1
    # Objects over a store bound to one loop keep a background loop each, closed with them.
    own = HomeLoop(None)
    assert bounded(lambda: own.call_sync(where())) not in seen
    own.close()


def test_a_sync_call_on_the_home_loop_is_refused_even_over_a_store_that_serves_any_loop() -> None:
    async def program() -> None:
        home = HomeLoop(None, any_loop=True)
        call = where()
        with pytest.raises(RuntimeError, match="would block it"):
            home.call_sync(call)
        assert inspect.getcoroutinestate(call) == inspect.CORO_CLOSED

    bounded(lambda: asyncio.run(program()))


def test_a_home_loop_made_in_a_context_holding_its_owner_is_still_collected() -> None:
    """A framework calling an adapter synchronously from a worker thread whose context holds the
    adapter (LangChain's run config holds the history it runs with): the background loop made
    there must not keep that context, or the adapter is never collected and the loop's thread
    never ends."""
    holder: contextvars.ContextVar[object] = contextvars.ContextVar("holder")

    class Adapter:
        def __init__(self) -> None:
            self.home = HomeLoop(None)

    async def serving_thread() -> threading.Thread:
        return threading.current_thread()

    def program() -> threading.Thread:
        adapter = Adapter()

        def inside_a_run(running: Adapter) -> threading.Thread:
            holder.set(running)
            return running.home.call_sync(serving_thread())

        thread = contextvars.copy_context().run(inside_a_run, adapter)
        del adapter
        gc.collect()
        thread.join(5)
        return thread

    assert not bounded(program).is_alive()


def test_closing_a_home_loop_lets_a_call_finish_the_work_it_shields_from_cancellation() -> None:
    """A change made of several writes shields them once begun (a cancel must not leave half of
    it stored): closing the object's background loop under it lets that work end first."""
    finished = threading.Event()
    began = threading.Event()

    async def change() -> None:
        async def both_writes() -> None:
            began.set()
            await asyncio.sleep(0.3)
            finished.set()

        work = asyncio.ensure_future(both_writes())
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            await work
            raise

    def program() -> str:
        home = HomeLoop(None)
        outcome: Future[str] = Future()

        def call() -> None:
            try:
                home.call_sync(change())
                outcome.set_result("returned")
            except RuntimeError as error:
                outcome.set_result(str(error))

        threading.Thread(target=call).start()
        began.wait(5)
        home.close()
        assert finished.is_set()
        return outcome.result(5)

    assert "stopped before the call returned" in bounded(program)


def test_an_object_closed_and_used_again_keeps_no_finalizer_per_cycle() -> None:
    async def nothing() -> None:
        return None

    def program() -> int:
        home = HomeLoop(None)
        before = len(weakref.finalize._registry)  # type: ignore[attr-defined]
        for _ in range(20):
            home.call_sync(nothing())
            home.close()
        return len(weakref.finalize._registry) - before  # type: ignore[attr-defined]

    assert bounded(program) <= 1


def test_a_loop_closed_while_calls_keep_coming_stops_none_of_them_halfway() -> None:
    """Threads keep handing calls to a ``BackgroundLoop`` as it closes. A call handed over once
    the close began is refused before it starts, never started and then stopped halfway with a
    lock held (every later call of the object would wait for that lock forever)."""
    lock = AnyLoopLock()

    async def change() -> None:
        async with lock:
            await asyncio.sleep(0.02)

    def program() -> None:
        background = BackgroundLoop()
        home = HomeLoop(background)
        stop = threading.Event()

        def caller() -> None:
            while not stop.is_set():
                with contextlib.suppress(RuntimeError):
                    home.call_sync(change())

        callers = [threading.Thread(target=caller) for _ in range(3)]
        for thread in callers:
            thread.start()
        time.sleep(0.3)
        background.close()
        stop.set()
        for thread in callers:
            thread.join(10)
        home.call_sync(change())  # on the object's own loop now, once the lock is free
        home.close()

    for _ in range(3):
        bounded(program, timeout=20)
