"""Counting the transactions a store runs, for tests that pin how many a call or a turn takes;
and holding a SQLite store's writer busy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chatmemory import ChatMemory
from chatmemory._sqlite_driver import SQLiteDriver


@contextmanager
def counted(memory: ChatMemory) -> Iterator[list[str]]:
    """Within the block, ``"read"`` or ``"write"`` for each transaction ``memory`` runs, in order."""
    db = memory._db
    names: list[str] = []
    run = db.run

    async def counting(plan: Any, *, write: bool = False, **options: Any) -> Any:
        names.append("write" if write else "read")
        return await run(plan, write=write, **options)

    db.run = counting  # type: ignore[method-assign]
    try:
        yield names
    finally:
        del db.run


def writer_busy(driver: SQLiteDriver, gate: threading.Event) -> asyncio.Future[bool]:
    """Keep a store's SQLite writer busy until ``gate`` is set (at most 30 s), as a write in
    progress does: writes meanwhile queue in front of it, small ones too (they would otherwise
    run on their caller's thread)."""

    def busy() -> bool:
        with driver._writing:
            return gate.wait(30)

    return asyncio.wrap_future(driver._writer.submit(busy))
