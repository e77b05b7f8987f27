"""Counting the transactions a store runs, for tests that pin how many a call or a turn takes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chatmemory import ChatMemory


@contextmanager
def counted(memory: ChatMemory) -> Iterator[list[str]]:
    """Within the block, ``"read"`` or ``"write"`` for each transaction ``memory`` runs, in order."""
    db = memory._db
    names: list[str] = []
    run = db.run

    async def counting(plan: Any, *, write: bool = False, group: Any = None) -> Any:
        names.append("write" if write else "read")
        return await run(plan, write=write, group=group)

    db.run = counting  # type: ignore[method-assign]
    try:
        yield names
    finally:
        del db.run
