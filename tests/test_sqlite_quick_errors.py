"""SQLite: a small call's own error, raised on its caller's thread, reaches the caller as it
would from the store's threads; only a store that is closing answers "the store is closed"."""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest

from chatmemory import ChatMemory, Principal, StorageError, _sqlite_driver
from chatmemory._plan import Plan, Stmt
from chatmemory._sql import SQL


def _failing() -> Plan[None]:
    yield Stmt(SQL("SELECT 1"), {})
    raise RuntimeError("the plan's own error")


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
@pytest.mark.parametrize("rows", [1, None], ids=["small", "large"])
async def test_a_runtime_error_of_a_small_call_is_not_taken_for_a_closed_store(
    tmp_path: Path, write: bool, rows: int | None
) -> None:
    """A ``RuntimeError`` a call raises itself (a ``RecursionError``, say) goes through
    unchanged, on the caller's thread as on the store's, and the store goes on."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        with pytest.raises(RuntimeError, match="the plan's own error"):
            await memory._db.run(_failing(), write=write, rows=rows)
        assert await memory.scoped(Principal("alice")).start_conversation()


# Far more than ``_sqlite_driver._CLOCK_STEPS`` steps of SQLite's virtual machine.
_LONG = SQL(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) SELECT count(*) FROM n"
)


async def test_a_small_read_that_runs_long_as_the_store_closes_is_refused_and_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's reader threads stop (it is closing) while a small read runs long on its
    caller's thread: the read fails as one on a closed store does, its plan is closed and the
    connection of small reads is free, with no transaction open."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        closed: list[bool] = []

        def long_read() -> Plan[Any]:
            try:
                return (yield Stmt(_LONG, {}))
            finally:
                closed.append(True)

        await memory._db.run(long_read(), rows=1)  # opens the connection of small reads
        closed.clear()
        monkeypatch.setattr(_sqlite_driver, "QUICK_READ_SECONDS", 0.0)
        driver = memory._db._sqlite
        assert driver is not None and driver._quick_reader is not None
        driver._readers.shutdown()
        with pytest.raises(StorageError, match="closed"):
            await memory._db.run(long_read(), rows=1)
        assert closed == [True]
        assert driver._quick_reading.acquire(blocking=False)
        driver._quick_reading.release()
        assert not driver._quick_reader.in_transaction


def _lines_before_the_release() -> list[int]:
    """The lines of ``SQLiteDriver.run_here`` before its ``finally``, where its lock is released:
    a signal's handler may raise at any of them."""
    source, first = inspect.getsourcelines(_sqlite_driver.SQLiteDriver.run_here)
    body = next(i for i, line in enumerate(source) if line.rstrip().endswith('"""') and i > 0) + 1
    end = next(i for i, line in enumerate(source) if line.strip() == "finally:")
    return [
        first + i for i in range(body, end) if source[i].strip() and not source[i].strip().startswith("#")
    ]


@pytest.mark.parametrize("write", [True, False], ids=["write", "read"])
async def test_a_signal_during_a_small_call_leaves_the_store_usable(tmp_path: Path, write: bool) -> None:
    """Ctrl-C's ``KeyboardInterrupt`` (or a SIGTERM handler's ``SystemExit``) raised at any line
    of a small call on the caller's thread, before its lock is released: the caller gets it,
    and the store's locks are free for the next calls and the close. Before: raised
    right after the lock was taken, it left the lock held, and every later write and the close
    waited for good. A trace function raises it, where a signal's handler would run."""
    code = _sqlite_driver.SQLiteDriver.run_here.__code__
    target: list[int] = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None

        def at_line(frame: Any, event: str, arg: Any) -> Any:
            if event == "line" and target and frame.f_lineno == target[0]:
                target.clear()
                raise KeyboardInterrupt("a signal's handler")
            return at_line

        return at_line

    memory = await ChatMemory.open(f"sqlite:///{tmp_path}/chat.db")
    try:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        driver = memory._db._sqlite
        assert driver is not None
        lines = _lines_before_the_release()
        for line in lines:
            target[:] = [line]
            sys.settrace(tracer)
            try:
                if write:
                    await alice.append_messages(run.id, [{"role": "user", "content": str(line)}])
                else:
                    await alice.list_messages(history_id=run.id, limit=10)
            except KeyboardInterrupt:
                pass
            finally:
                sys.settrace(None)
            assert not driver._writing.locked() and not driver._quick_reading.locked(), line
            await asyncio.wait_for(alice.append_messages(run.id, [{"role": "user", "content": "after"}]), 10)
            await asyncio.wait_for(alice.list_messages(history_id=run.id, limit=10), 10)
        assert len(lines) > 5
    finally:
        await asyncio.wait_for(memory.close(), 20)  # a lock left held would hold the close for good
