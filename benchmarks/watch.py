"""``python -m benchmarks.watch``: how soon a watcher sees a commit, and what watching costs writers.

- latency: one message appended at a time (paced), from the moment its writer's commit
  returned to the moment a watcher of the conversation holds the event, p50 and p99; the
  writer in the same process, then in another process (SQLite: noticed by polling
  ``PRAGMA data_version`` every ``watch_interval``; PostgreSQL: ``LISTEN/NOTIFY``);
- writers: W1 (one turn of two messages per call, awaited one by one) with the change log
  and no watcher, with 1 and with 10 watchers (in the writer's process, half of them
  sidebars) reading every change, and with the change log left out (a benchmark-only patch,
  the baseline of what the log costs); the median of ``--repeat`` interleaved rounds.

Times come from ``time.monotonic()``, one clock for every process on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import re
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

from benchmarks._data import percentile
from benchmarks._targets import targets_of
from chatmemory import ChatMemory, NewMessage, Principal, _db, _sql
from chatmemory._plan import Plan
from chatmemory.scope import Scope

ALICE = Principal("alice")


async def _writer(url: str, history_id: str, count: int, pace: float) -> None:
    """Appends ``count`` messages and prints each one's ``seq`` with when its commit returned."""
    async with ChatMemory.open(url, migrate=False) as memory:
        chat = memory.scoped(ALICE)
        committed = []
        for i in range(count):
            (message,) = await chat.append_messages(history_id, [NewMessage("user", f"m{i}")])
            committed.append((message.seq, time.monotonic()))
            await asyncio.sleep(pace)
    print(json.dumps(committed))


async def _arrivals(chat: Scope, conversation_id: Any, cursor: str, count: int) -> dict[int, float]:
    seen: dict[int, float] = {}
    async for event in chat.watch(conversation_id, after=cursor):
        if event.seq is not None:
            seen[event.seq] = time.monotonic()
        if len(seen) == count:
            break
    return seen


async def latency(url: str, count: int, pace: float, *, elsewhere: bool) -> list[float]:
    """Commit-to-watcher latencies in ms, the writer here or in another process."""
    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(ALICE)
        conversation = await chat.start_conversation()
        history = await chat.start_history(conversation.id, model="m")
        cursor = await chat.change_cursor(conversation.id)
        watching = asyncio.ensure_future(_arrivals(chat, conversation.id, cursor, count))
        await asyncio.sleep(0.2)  # the watcher (and a listener) is up before the first write
        if elsewhere:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.watch", "--writer", url, str(history.id), str(count),
                str(pace), stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(process.communicate(), 300)
            committed = dict(json.loads(out))
        else:
            committed = {}
            for i in range(count):
                (message,) = await chat.append_messages(history.id, [NewMessage("user", f"m{i}")])
                committed[message.seq] = time.monotonic()
                await asyncio.sleep(pace)
        seen = await asyncio.wait_for(watching, 60)
    return [(seen[seq] - at) * 1000 for seq, at in committed.items()]


async def _drain(chat: Scope, conversation_id: Any, cursor: str) -> None:
    async for _event in chat.watch(conversation_id, after=cursor):
        pass


async def writer_cost(url: str, turns: int, watchers: int) -> tuple[float, list[float]]:
    """W1 turns/s and per-turn ms with ``watchers`` watchers (half of them sidebars) reading every change."""
    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(ALICE)
        conversation = await chat.start_conversation()
        history = await chat.start_history(conversation.id, model="m")
        for i in range(20):  # warm up
            await chat.append_messages(history.id, [NewMessage("user", f"w{i}")])
        cursor = await chat.change_cursor()
        tasks = [
            asyncio.ensure_future(_drain(chat, None if k % 2 else conversation.id, cursor))
            for k in range(watchers)
        ]
        samples = []
        start = time.perf_counter()
        for i in range(turns):
            t = time.perf_counter()
            await chat.append_messages(
                history.id, [NewMessage("user", f"q{i}"), NewMessage("assistant", f"a{i}")]
            )
            samples.append((time.perf_counter() - t) * 1000)
        elapsed = time.perf_counter() - start
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return turns / elapsed, samples


@contextlib.contextmanager
def without_change_log() -> Iterator[None]:
    """Writes with their change records dropped and PostgreSQL's append without its log (baseline only)."""
    logged, append_postgres = _db.logged, _sql.append_postgres

    def unlogged(plan: Plan[Any], _token: str, **_options: Any) -> Plan[Any]:
        answer: Any = None
        try:
            stmt = plan.send(answer)
            while True:
                answer = [] if stmt.sql is _sql.RECORD_CHANGE else (yield stmt)
                stmt = plan.send(answer)
        except StopIteration as done:
            return done.value, False

    @functools.cache
    def bare(scope: Any) -> _sql.SQL:
        full = append_postgres(scope)
        statement = _sql.SQL("-- PostgreSQL only", "")
        # The log's CTEs come last, so the parameters left are numbered first.
        statement.postgres = re.sub(r", clock AS \(.*(?= SELECT h\.status)", "", full.postgres, flags=re.S)
        statement.names = full.names[: len(set(re.findall(r"\$\d+", statement.postgres)))]
        return statement

    _db.logged, _sql.append_postgres = unlogged, bare  # type: ignore[assignment]
    try:
        yield
    finally:
        _db.logged, _sql.append_postgres = logged, append_postgres  # type: ignore[assignment]


def _row(name: str, samples: list[float]) -> str:
    return f"| {name} | {percentile(samples, 0.5):.1f} | {percentile(samples, 0.99):.1f} |"


async def main(args: argparse.Namespace) -> None:
    async with targets_of(args.backend) as targets:
        for target in targets:
            print(f"\n### {target.backend}\n", flush=True)
            print("| commit → watcher | p50 ms | p99 ms |\n|---|---|---|")
            for elsewhere in (False, True):
                store = await target.fresh("watch-latency")
                samples = await latency(store.url, args.events, args.pace, elsewhere=elsewhere)
                print(
                    _row("writer in another process" if elsewhere else "writer in the same process", samples)
                )
            print("\n| W1 writer | turns/s | p50 ms | p99 ms |\n|---|---|---|---|")
            variants: list[tuple[str, int, bool]] = [
                ("no change log (baseline)", 0, False),
                ("change log, no watcher", 0, True),
                ("change log, 1 watcher", 1, True),
                ("change log, 10 watchers", 10, True),
            ]
            rates: dict[str, list[float]] = {name: [] for name, _, _ in variants}
            pooled: dict[str, list[float]] = {name: [] for name, _, _ in variants}
            # Rounds interleave the variants, so a busy moment of the machine hits them alike.
            for _round in range(args.repeat):
                for name, watchers, log in variants:
                    store = await target.fresh("watch-w1")
                    with contextlib.nullcontext() if log else without_change_log():
                        rate, samples = await writer_cost(store.url, args.turns, watchers)
                    rates[name].append(rate)
                    pooled[name].extend(samples)
            for name, _, _ in variants:
                p50, p99 = percentile(pooled[name], 0.5), percentile(pooled[name], 0.99)
                print(
                    f"| {name} | {statistics.median(rates[name]):.0f} | {p50:.2f} | {p99:.2f} |", flush=True
                )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.watch", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--events", type=int, default=200, help="messages timed for latency (default 200)")
    parser.add_argument("--pace", type=float, default=0.01, help="seconds between them (default 0.01)")
    parser.add_argument("--turns", type=int, default=500, help="W1 turns per variant and round (default 500)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of W1 variants; the median rate (default 3)"
    )
    parser.add_argument(
        "--writer", nargs=4, metavar=("URL", "HISTORY", "COUNT", "PACE"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse()
    if options.writer:
        url, history_id, count, pace = options.writer
        asyncio.run(_writer(url, history_id, int(count), float(pace)))
    else:
        asyncio.run(main(options))
