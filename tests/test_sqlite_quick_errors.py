"""SQLite: a small call's own error, raised on its caller's thread, reaches the caller as it
would from the store's threads; only a store that is closing answers "the store is closed"."""

from __future__ import annotations

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
