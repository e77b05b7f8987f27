"""Running a synchronous program, which may make event loops of its own, from an async test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


async def in_daemon_thread(program: Callable[[str], T], url: str) -> T:
    """``program(url)`` in a daemon thread, so a program that waits forever fails the test
    (after 30 s) without keeping the test process alive."""
    outcome: Future[T] = Future()

    def run() -> None:
        try:
            outcome.set_result(program(url))
        except BaseException as error:  # handed to the test
            outcome.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    return await asyncio.wait_for(asyncio.wrap_future(outcome), timeout=30)


def owner_loop_beside(loop: asyncio.AbstractEventLoop, work: Callable[[], object]) -> tuple[list[str], int]:
    """Run ``work`` in a thread of its own while this thread goes on using ``loop`` with
    ``run_until_complete``, as a program that made an adapter on its loop does; the errors those
    runs met ("This event loop is already running") and how many ran."""
    writer = threading.Thread(target=work)
    writer.start()
    errors: list[str] = []
    turns = 0
    while writer.is_alive():
        try:
            loop.run_until_complete(asyncio.sleep(0.001))
            turns += 1
        except RuntimeError as error:
            errors.append(str(error))
    writer.join()
    return errors, turns
