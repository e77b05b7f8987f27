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
