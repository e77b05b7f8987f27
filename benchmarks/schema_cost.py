"""``python -m benchmarks.schema_cost``: what SQLite itself spends writing into each schema.

W2's shape (batches of messages into one conversation, each batch one transaction) written
with raw ``sqlite3`` and nothing else: the batch's rows are built before the clock starts, then
``BEGIN IMMEDIATE``, the conversation's counters, ``executemany`` of the rows, the change-log
row every chatmemory write adds, and ``COMMIT`` are timed. So the figures are SQLite's own
cost of each schema, the floor under any client.

Variants of chatmemory's schema (each a copy of a freshly migrated database, changed one way):
as it is; with the ``IN``-list checks it had before migration 0009; without each of the two
message indexes on the history; without foreign-key enforcement. Beside them, the tables the
OpenAI Agents SDK's ``SQLiteSession`` creates (made by the SDK itself), written the way it
writes them: a JSON text per message and its session's ``updated_at``.

Rounds alternate the variants, each round starting one variant further down the list, and each
variant starts once what the ones before it wrote is on disk; each round prints the median ms per
batch. The table gives the median of the rounds and the ratio to chatmemory's schema as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import _raw_sql as sql
from benchmarks._data import message
from benchmarks._raw_sqlite import migrate
from benchmarks._targets import SQLITE_PEER_PRAGMAS, SQLITE_PRAGMAS, Store
from chatmemory._db import Database, create_engine
from chatmemory._migrate import downgrade

Batch = Callable[[sqlite3.Connection, int], float]

# The row every chatmemory write adds to its change log, as the store writes it for an append.
_LOG_CHANGE = (
    "INSERT INTO chat_changes (chat_conversation_id, kind, history_id, message_id, seq, seq_count,"
    " created_at) VALUES (?, 'message.appended', ?, NULL, ?, ?, ?)"
)


def _connect(path: Path, foreign_keys: bool = True) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in SQLITE_PRAGMAS if foreign_keys else SQLITE_PEER_PRAGMAS:
        connection.execute(f"PRAGMA {pragma}")
    return connection


def _chatmemory_writer(connection: sqlite3.Connection) -> Batch:
    conv, conv_row, history_row = sql.new_conversation("w2", sql.SQLITE)
    connection.execute(sql.INSERT_CONVERSATION, conv_row)
    connection.execute(sql.INSERT_HISTORY, history_row)
    last = 0

    def batch(connection: sqlite3.Connection, size: int) -> float:
        nonlocal last
        messages = [message("w2", last + i) for i in range(size)]
        when = sql.now()
        rows = sql.message_rows(conv, messages, last + size, sql.SQLITE, when)
        bump = sql.bump_params(conv, messages, sql.SQLITE, when)
        log = (conv_row[0], conv.history_id.hex, last + 1, size, sql.SQLITE.time(when))
        start = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(sql.BUMP, bump).fetchall()
        connection.executemany(sql.INSERT_MESSAGE, rows)
        connection.execute(_LOG_CHANGE, log)
        connection.execute("COMMIT")
        elapsed = time.perf_counter() - start
        last += size
        return elapsed

    return batch


def _session_writer(connection: sqlite3.Connection) -> Batch:
    session_id = "w2"
    last = 0

    def batch(connection: sqlite3.Connection, size: int) -> float:
        nonlocal last
        messages = [message("w2", last + i) for i in range(size)]
        rows = [(session_id, json.dumps({"role": m.role, "content": m.text})) for m in messages]
        start = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT OR IGNORE INTO agent_sessions (session_id) VALUES (?)", (session_id,))
        connection.executemany("INSERT INTO agent_messages (session_id, message_data) VALUES (?, ?)", rows)
        connection.execute(
            "UPDATE agent_sessions SET updated_at = CURRENT_TIMESTAMP WHERE session_id = ?", (session_id,)
        )
        connection.execute("COMMIT")
        elapsed = time.perf_counter() - start
        last += size
        return elapsed

    return batch


async def _checks_before_0009(path: Path) -> None:
    engine = create_engine(f"sqlite:///{path}")
    try:
        await downgrade(Database(engine), "0008")
    finally:
        await engine.dispose()


def _variants(directory: Path) -> dict[str, tuple[Path, bool, Callable[[sqlite3.Connection], Batch]]]:
    """Each variant's empty database, whether it enforces foreign keys, and its writer."""
    template = directory / "template.db"
    asyncio.run(migrate(Store("sqlite", f"sqlite:///{template}", template)))

    def copy(name: str, *statements: str) -> Path:
        path = directory / f"{name}.db"
        shutil.copyfile(template, path)
        with sqlite3.connect(path) as connection:
            for statement in statements:
                connection.execute(statement)
        return path

    in_lists = copy("in_lists")
    asyncio.run(_checks_before_0009(in_lists))
    from agents import SQLiteSession  # the SDK makes its own tables

    session = directory / "session.db"
    SQLiteSession("w2", session).close()
    return {
        "chatmemory's schema": (copy("as_is"), True, _chatmemory_writer),
        "with IN-list checks (before 0009)": (in_lists, True, _chatmemory_writer),
        "without the (history, created_at) index": (
            copy("no_created", "DROP INDEX ix_chat_messages_chat_history_id_created_at"),
            True,
            _chatmemory_writer,
        ),
        "without the (history, seq) index": (
            copy("no_seq", "DROP INDEX ix_chat_messages_chat_history_id_seq"),
            True,
            _chatmemory_writer,
        ),
        "without foreign-key enforcement": (copy("no_fk"), False, _chatmemory_writer),
        # As the suite runs SQLiteSession: the SDK never turns foreign-key enforcement on.
        "SQLiteSession's tables (openai-agents)": (session, False, _session_writer),
    }


def _settle() -> None:
    """Wait until what earlier variants wrote is on disk: the kernel writing it back while the
    next variant runs would slow that one (and favour whichever runs first)."""
    if hasattr(os, "sync"):
        os.sync()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.schema_cost", description=__doc__)
    parser.add_argument("--batch", type=int, default=100, help="messages per transaction (W2: 100)")
    parser.add_argument("--batches", type=int, default=100, help="transactions per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        variants = _variants(Path(directory))
        medians: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for number in range(args.rounds):
            # Each round starts one place further down the list, so no variant always runs first
            # or after the same one; and each starts once the files written before it are on disk.
            for name in names[number % len(names) :] + names[: number % len(names)]:
                template, foreign_keys, writer = variants[name]
                path = Path(directory) / f"round{number}.db"
                shutil.copyfile(template, path)
                _settle()
                connection = _connect(path, foreign_keys)
                batch = writer(connection)
                times = [batch(connection, args.batch) for _ in range(args.batches)]
                connection.close()
                path.unlink()
                medians[name].append(statistics.median(times) * 1000)
            print(f"round {number + 1}: " + ", ".join(f"{v[-1]:.3f}" for v in medians.values()), flush=True)
    base = statistics.median(medians["chatmemory's schema"])
    print(f"\nSQLite's own time per transaction of {args.batch} messages, median of {args.rounds} rounds:\n")
    print("| schema | ms per batch | x chatmemory's schema |")
    print("|---|---|---|")
    for name, values in medians.items():
        ms = statistics.median(values)
        print(f"| {name} | {ms:.3f} | {ms / base:.2f}x |")


if __name__ == "__main__":
    main()
