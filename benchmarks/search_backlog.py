"""``python -m benchmarks.search_backlog``: what the first search over a backlog costs.

Search indexes at search time (appends pay nothing for it), so the first search after a bulk
load, or after an upgrade to migration 0010, indexes every message written before it. This loads
``--messages`` messages into a fresh store, then searches once while another task appends one
message every 5 ms, and reports how long the search took and the slowest of those appends (how
long the writers were held off). It does so twice per round, on fresh stores, alternating: the
backlog indexed in parts (``_search.INDEX_PART`` messages to a write transaction, as the store
does) and in one transaction (as it did before).

On SQLite the parts let the store's one writer serve the appends between them. On PostgreSQL,
whose appends never wait for a search, they keep each statement short: with
``--statement-timeout`` (milliseconds, set on the database once it is loaded, as a managed
service sets one) a way whose statement runs longer fails, and the row says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

from benchmarks._data import message
from benchmarks._targets import PostgresTarget, SqliteTarget, Store, Target, asyncpg, postgres_server
from chatmemory import ChatMemory, NewMessage, Principal, StorageError, _search
from chatmemory.scope import Scope

WAYS = {"in parts": _search.INDEX_PART, "in one transaction": 1 << 62}


async def once(store: Store, messages: int, part: int, timeout_ms: int | None) -> tuple[str, float, int]:
    """The search's ms (or why it failed), the slowest append's ms and how many appends ran beside it."""
    async with ChatMemory.open(store.url) as memory:
        chat = memory.scoped(Principal("backlog"))
        bulk = await chat.start_history((await chat.start_conversation("bulk")).id, model="bench-model")
        for start in range(0, messages, 1000):
            batch = [message("backlog", i) for i in range(start, min(start + 1000, messages))]
            await chat.append_messages(bulk.id, [NewMessage(m.role, m.text) for m in batch])
        beside = await chat.start_history((await chat.start_conversation("beside")).id, model="bench-model")
        if timeout_ms is None:
            return await _search_beside(chat, beside.id, messages, part)
    await _set_statement_timeout(store, timeout_ms)
    async with ChatMemory.open(store.url) as memory:  # new connections, under the timeout
        return await _search_beside(memory.scoped(Principal("backlog")), beside.id, messages, part)


async def _search_beside(chat: Scope, beside: UUID, messages: int, part: int) -> tuple[str, float, int]:
    waits: list[float] = []
    searching = True

    async def appender() -> None:
        while searching:
            start = time.perf_counter()
            await chat.append_messages(beside, [NewMessage("user", "beside the search")])
            waits.append(time.perf_counter() - start)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(appender())
    await asyncio.sleep(0.05)
    _search.INDEX_PART, kept = part, _search.INDEX_PART
    try:
        start = time.perf_counter()
        page = await chat.search_messages(f"backlog:{messages - 1}")
        took = f"{(time.perf_counter() - start) * 1000:.0f}"
        assert page.items, "the search must find the last message loaded"
    except StorageError as exc:
        if "statement timeout" not in str(exc):
            raise
        took = f"failed after {(time.perf_counter() - start) * 1000:.0f}: statement timeout"
    finally:
        _search.INDEX_PART = kept
        searching = False
        await task
    return took, max(waits) * 1000, len(waits)


async def _set_statement_timeout(store: Store, timeout_ms: int) -> None:
    conn = await asyncpg().connect(**store.asyncpg_args())
    try:
        await conn.execute(
            f'ALTER DATABASE "{store.asyncpg_args()["database"]}" SET statement_timeout = {timeout_ms}'
        )
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _target(backend: str) -> AsyncIterator[Target]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield SqliteTarget(Path(directory))
        return
    with postgres_server() as url:
        if url is None:
            raise SystemExit("PostgreSQL: set CHATMEMORY_BENCH_POSTGRES_URL or install pgserver")
        yield PostgresTarget(url)


async def main(args: argparse.Namespace) -> None:
    timeout = f", statement_timeout {args.statement_timeout} ms" if args.statement_timeout else ""
    print(f"{args.backend}: {args.messages} messages loaded, then one search{timeout}", end="")
    print("; an append every 5 ms beside it\n")
    print("| round | indexed | search ms | slowest append ms | appends beside |")
    print("|---|---|---|---|---|")
    async with _target(args.backend) as target:
        for round_ in range(1, args.rounds + 1):
            ways = list(WAYS.items()) if round_ % 2 else list(WAYS.items())[::-1]
            for way, part in ways:
                store = await target.fresh(f"backlog{round_}")
                took, slowest, beside = await once(store, args.messages, part, args.statement_timeout)
                print(f"| {round_} | {way} | {took} | {slowest:.1f} | {beside} |", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_backlog", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--messages", type=int, default=200_000, help="messages loaded (default 200,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both ways (default 3)")
    parser.add_argument(
        "--statement-timeout", type=int, default=None, metavar="MS", help="PostgreSQL: set on the database"
    )
    args = parser.parse_args(argv)
    if args.statement_timeout is not None and args.backend != "postgres":
        parser.error("--statement-timeout is for --backend postgres")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
