"""SQLite: a small call's own error, raised on its caller's thread, reaches the caller as it
would from the store's threads; only a store that is closing answers "the store is closed"."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatmemory import ChatMemory, Principal
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
