"""``python -m benchmarks.search_backlog``: what the first search over a backlog costs the writers.

Search indexes at search time (appends pay nothing for it), so the first search after a bulk
load, or after an upgrade to migration 0010, indexes every message written before it. On
SQLite that is work for the store's one writer. This loads ``--messages`` messages into a fresh
SQLite store, then searches once while another task appends one message every 5 ms, and
reports how long the search took and the slowest of those appends (how long the writers were
held off). It does so twice per round, on fresh stores, alternating: the backlog indexed in
parts (``_search.INDEX_PART`` messages to a write transaction, as the store does) and in one
transaction (as it did before).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks._data import message
from chatmemory import ChatMemory, NewMessage, Principal, _search

WAYS = {"in parts": _search.INDEX_PART, "in one transaction": 1 << 62}


async def once(path: Path, messages: int, part: int) -> tuple[float, float, int]:
    """The search's ms, the slowest append's ms and how many appends ran beside it."""
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        chat = memory.scoped(Principal("backlog"))
        bulk = await chat.start_history((await chat.start_conversation("bulk")).id, model="bench-model")
        for start in range(0, messages, 1000):
            batch = [message("backlog", i) for i in range(start, min(start + 1000, messages))]
            await chat.append_messages(bulk.id, [NewMessage(m.role, m.text) for m in batch])
        beside = await chat.start_history((await chat.start_conversation("beside")).id, model="bench-model")
        waits: list[float] = []
        searching = True

        async def appender() -> None:
            while searching:
                start = time.perf_counter()
                await chat.append_messages(beside.id, [NewMessage("user", "beside the search")])
                waits.append(time.perf_counter() - start)
                await asyncio.sleep(0.005)

        task = asyncio.create_task(appender())
        await asyncio.sleep(0.05)
        _search.INDEX_PART, kept = part, _search.INDEX_PART
        try:
            start = time.perf_counter()
            page = await chat.search_messages(f"backlog:{messages - 1}")
            took = time.perf_counter() - start
        finally:
            _search.INDEX_PART = kept
        searching = False
        await task
        assert page.items, "the search must find the last message loaded"
        return took * 1000, max(waits) * 1000, len(waits)


async def main(args: argparse.Namespace) -> None:
    print(f"{args.messages} messages loaded, then one search; an append every 5 ms beside it\n")
    print("| round | indexed | search ms | slowest append ms | appends beside |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(1, args.rounds + 1):
            ways = list(WAYS.items()) if round_ % 2 else list(WAYS.items())[::-1]
            for way, part in ways:
                path = Path(directory) / f"{round_}-{part}.db"
                took, slowest, beside = await once(path, args.messages, part)
                print(f"| {round_} | {way} | {took:.0f} | {slowest:.1f} | {beside} |", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_backlog", description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000, help="messages loaded (default 200,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both ways (default 3)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
