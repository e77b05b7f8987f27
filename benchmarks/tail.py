"""``python -m benchmarks.tail``: where W1's slowest turns on SQLite come from.

Runs W1 (one turn of two messages per call, awaited one by one) on a fresh SQLite file and
times every turn, noting which ran while the store's background checkpoint was copying the
WAL back into the database file (``chatmemory._sqlite_wal``). Prints, per round, the share of
turns that overlapped a checkpoint and p50/p90/p99 of the turns that did and of those that did
not, with the checkpoints' count and total time.

``--checkpoint-syncs off`` runs the checkpoints without their two syncs (a benchmark-only patch
that gives up the database's safety on power loss): what is left of their time, and of the
turns they slow, is then the copying alone.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._data import percentile, turn
from benchmarks._targets import SqliteTarget
from chatmemory import ChatMemory, NewMessage, Principal, _sqlite_wal

Spans = list[tuple[float, float]]


def _recording(spans: Spans, syncs: bool) -> Callable[[], None]:
    """Patch the checkpointer to note when each of its checkpoints ran; returns the undo."""
    checkpoint = _sqlite_wal.Checkpointer._checkpoint

    def timed(self: _sqlite_wal.Checkpointer, connection: sqlite3.Connection) -> None:
        if not syncs:
            connection.execute("PRAGMA synchronous = OFF")
        start = time.perf_counter()
        try:
            checkpoint(self, connection)
        finally:
            spans.append((start, time.perf_counter()))

    _sqlite_wal.Checkpointer._checkpoint = timed  # type: ignore[method-assign]

    def undo() -> None:
        _sqlite_wal.Checkpointer._checkpoint = checkpoint  # type: ignore[method-assign]

    return undo


def _overlaps(spans: Spans, start: float, end: float) -> bool:
    """Whether a checkpoint ran at any time between ``start`` and ``end``."""
    ends = [e for _, e in spans]
    i = bisect.bisect_left(ends, start)
    return i < len(spans) and spans[i][0] <= end


def _line(label: str, samples: list[float]) -> str:
    if not samples:
        return f"{label}: none"
    p50, p90, p99 = (percentile(samples, q) for q in (0.5, 0.9, 0.99))
    return f"{label}: {len(samples)} turns, p50 {p50:.3f} ms, p90 {p90:.3f} ms, p99 {p99:.3f} ms"


async def _round(directory: Path, name: str, turns: int, syncs: bool) -> None:
    spans: Spans = []
    undo = _recording(spans, syncs)
    try:
        store = await SqliteTarget(directory).fresh(name)
        async with ChatMemory.open(store.url) as memory:
            chat = memory.scoped(Principal("tail"))
            conversation = await chat.start_conversation("tail")
            run = await chat.start_history(conversation.id, model="bench-model")
            times: list[tuple[float, float]] = []
            for i in range(turns):
                batch = [NewMessage(m.role, m.text) for m in turn("tail", i)]
                start = time.perf_counter()
                await chat.append_messages(run.id, batch)
                times.append((start, time.perf_counter()))
    finally:
        undo()
    spans.sort()
    during: list[float] = []
    outside: list[float] = []
    for start, end in times:
        (during if _overlaps(spans, start, end) else outside).append((end - start) * 1000)
    total = [(end - start) * 1000 for start, end in times]
    busy = sum(end - start for start, end in spans) * 1000
    print(f"{name}: {turns / (times[-1][1] - times[0][0]):,.0f} turns/s; {_line('all', total)}")
    share = len(during) / turns
    print(f"  {len(spans)} checkpoints, {busy:.0f} ms in all; {share:.0%} of turns overlapped one")
    print(f"  {_line('during a checkpoint', during)}")
    print(f"  {_line('outside checkpoints', outside)}")


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tail", description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkpoint-syncs", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chatmemory-bench-") as directory:
        for i in range(args.repeat):
            asyncio.run(_round(Path(directory), f"round {i + 1}", args.turns, args.checkpoint_syncs == "on"))


if __name__ == "__main__":
    main()
