"""Counting the transactions (and statements) a store runs, for tests that pin how many a call or
a turn takes;
holding a SQLite store's writer busy; and committing another writer's work in the middle of
a read."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from chatmemory import ChatMemory
from chatmemory._plan import Stmt
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


@contextmanager
def statements(memory: ChatMemory) -> Iterator[list[Stmt]]:
    """Within the block, every statement ``memory`` sends to its database, in order."""
    sent: list[Stmt] = []
    memory._db.set_trace(sent.append)
    try:
        yield sent
    finally:
        memory._db.set_trace(None)


def writer_busy(driver: SQLiteDriver, gate: threading.Event) -> asyncio.Future[bool]:
    """Keep a store's SQLite writer busy until ``gate`` is set (at most 30 s), as a write in
    progress does: writes meanwhile queue in front of it, small ones too (they would otherwise
    run on their caller's thread)."""

    def busy() -> bool:
        with driver._writing:
            return gate.wait(30)

    return asyncio.wrap_future(driver._writer.submit(busy))


def committed_before_messages(
    memory: ChatMemory, work: Callable[[], Awaitable[Any]]
) -> contextlib.AbstractContextManager[list[Any]]:
    """``committed_before`` the first statement that reads ``chat_messages``."""
    return committed_before(memory, "FROM chat_messages", work)


@contextmanager
def committed_before(
    memory: ChatMemory, marker: str, work: Callable[[], Awaitable[Any]]
) -> Iterator[list[Any]]:
    """Within the block, the first statement of ``memory`` whose text holds ``marker`` waits
    until ``work`` (another store's calls, on their own connections as another process's are)
    has run to its commit on a thread and event loop of its own. Yields the list ``work``'s
    result is put in; empty after the block if no such statement ran."""
    done: list[Any] = []

    def between(stmt: Stmt) -> None:
        text = stmt.sql.sqlite if memory._db.is_sqlite else stmt.sql.postgres
        if not done and marker in (text or ""):
            outcome: list[BaseException] = []

            def elsewhere() -> None:
                try:
                    done.append(asyncio.run(asyncio.wait_for(work(), timeout=30)))
                except BaseException as exc:
                    outcome.append(exc)

            writer = threading.Thread(target=elsewhere)
            writer.start()
            writer.join()
            if outcome:
                raise outcome[0]

    memory._db.set_trace(between)
    try:
        yield done
    finally:
        memory._db.set_trace(None)
