"""Bulk-load a database in chatmemory's schema for the read workloads (W4 and the scale runs).

Loading goes straight to the tables in the exact form chatmemory writes, so chatmemory and
every raw driver read the very same rows. Loading is not measured.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks import _raw_sql as sql
from benchmarks._data import MODEL, message, uuid7
from benchmarks._raw_sqlite import migrate
from benchmarks._system import SchemaConversation
from benchmarks._targets import Store, asyncpg

CHUNK = 20_000
READER = "reader"
LISTER = "lister"


@dataclass(frozen=True)
class Layout:
    """What to load: one long conversation, one user's many conversations, and other users' filler."""

    long_conversation: int
    user_conversations: int
    user_messages_each: int
    other_conversations: int
    other_messages_each: int

    @property
    def total_messages(self) -> int:
        """How many messages the layout stores."""
        return (
            self.long_conversation
            + self.user_conversations * self.user_messages_each
            + self.other_conversations * self.other_messages_each
        )


@dataclass(frozen=True)
class Seeded:
    """Handles into a loaded database, and what correct reads return."""

    long: SchemaConversation
    long_last_text: str
    lister: str
    previews: list[str]


@dataclass(frozen=True)
class _Conv:
    handle: SchemaConversation
    messages: int
    updated_at: datetime


def _conversations(layout: Layout) -> list[_Conv]:
    owners = (
        [(READER, layout.long_conversation)]
        + [(LISTER, layout.user_messages_each)] * layout.user_conversations
        + [(f"other-{i}", layout.other_messages_each) for i in range(layout.other_conversations)]
    )
    # The lister's conversations are spread through time among everyone else's.
    order = list(range(len(owners)))
    random.Random(7).shuffle(order)
    base = datetime.now(UTC) - timedelta(days=30)
    return [
        _Conv(SchemaConversation(owner, uuid7(), uuid7()), n, base + timedelta(milliseconds=order[i]))
        for i, (owner, n) in enumerate(owners)
    ]


def _rows(convs: list[_Conv], codec: sql.Codec) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for k, conv in enumerate(convs):
        cid, hid = codec.id(conv.handle.conversation_id), codec.id(conv.handle.history_id)
        stamp = codec.time(conv.updated_at)
        for i in range(conv.messages):
            m = message(f"c{k}", i)
            model = MODEL if m.role == "assistant" else None
            chunk.append(
                (codec.id(uuid7()), cid, hid, i + 1, m.role, m.text, model, "complete", stamp, stamp)
            )
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _conversation_row(k: int, conv: _Conv, codec: sql.Codec) -> tuple[Any, ...]:
    preview = message(f"c{k}", conv.messages - 1).text[: sql.PREVIEW_CHARS] if conv.messages else None
    stamp = codec.time(conv.updated_at)
    cid = codec.id(conv.handle.conversation_id)
    return (cid, conv.handle.owner, "seeded", "{}", conv.messages, conv.messages, preview, stamp, stamp)


_CONVERSATION_COLUMNS = (
    "id", "owner_id", "title", "metadata", "last_seq", "message_count", "last_message_preview",
    "created_at", "updated_at",
)  # fmt: skip
_HISTORY_COLUMNS = ("id", "chat_conversation_id", "model", "status", "created_at", "updated_at")


def _history_row(conv: _Conv, codec: sql.Codec) -> tuple[Any, ...]:
    stamp = codec.time(conv.updated_at)
    return (
        codec.id(conv.handle.history_id),
        codec.id(conv.handle.conversation_id),
        MODEL,
        "running",
        stamp,
        stamp,
    )


def _placeholders(columns: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in columns)


def _load_sqlite(store: Store, convs: list[_Conv]) -> None:
    assert store.path is not None
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO chat_conversations ({', '.join(_CONVERSATION_COLUMNS)})"
            f" VALUES ({_placeholders(_CONVERSATION_COLUMNS)})",
            [_conversation_row(k, c, sql.SQLITE) for k, c in enumerate(convs)],
        )
        conn.executemany(
            f"INSERT INTO chat_histories ({', '.join(_HISTORY_COLUMNS)})"
            f" VALUES ({_placeholders(_HISTORY_COLUMNS)})",
            [_history_row(c, sql.SQLITE) for c in convs],
        )
        for chunk in _rows(convs, sql.SQLITE):
            conn.executemany(sql.INSERT_MESSAGE, chunk)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def _load_postgres(store: Store, convs: list[_Conv]) -> None:
    conn = await asyncpg().connect(**store.asyncpg_args())
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "chat_conversations",
                records=[_conversation_row(k, c, sql.POSTGRES) for k, c in enumerate(convs)],
                columns=_CONVERSATION_COLUMNS,
            )
            await conn.copy_records_to_table(
                "chat_histories",
                records=[_history_row(c, sql.POSTGRES) for c in convs],
                columns=_HISTORY_COLUMNS,
            )
            for chunk in _rows(convs, sql.POSTGRES):
                await conn.copy_records_to_table(
                    "chat_messages", records=chunk, columns=sql.MESSAGE_COLUMNS.split(", ")
                )
        # Settled as a long-running database would be: hint bits and visibility map set, stats fresh.
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def seed(store: Store, layout: Layout, page: int) -> Seeded:
    """Create chatmemory's schema in ``store`` and load ``layout`` into it, then settle it (ANALYZE)."""
    await migrate(store)
    convs = _conversations(layout)
    if store.backend == "sqlite":
        _load_sqlite(store, convs)
    else:
        await _load_postgres(store, convs)
    listed = sorted(
        ((k, c) for k, c in enumerate(convs) if c.handle.owner == LISTER),
        key=lambda kc: (kc[1].updated_at, kc[1].handle.conversation_id),
        reverse=True,
    )
    previews = [message(f"c{k}", c.messages - 1).text[: sql.PREVIEW_CHARS] for k, c in listed[:page]]
    return Seeded(convs[0].handle, message("c0", layout.long_conversation - 1).text, LISTER, previews)
