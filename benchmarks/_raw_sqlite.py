"""Raw SQLite clients of chatmemory's schema: sqlite3 with one thread hop per call, and aiosqlite."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from benchmarks import _raw_sql as sql
from benchmarks._data import Msg
from benchmarks._system import EVERYTHING, Family, SchemaConversation
from benchmarks._targets import SQLITE_PRAGMAS, Store
from chatmemory import ChatMemory

T = TypeVar("T")


async def migrate(store: Store) -> None:
    """Create (or check) chatmemory's schema the way an application would."""
    async with ChatMemory.open(store.url):
        pass


class SqliteThreadSystem:
    """One sqlite3 connection; each call is one ``asyncio.to_thread`` hop doing the whole transaction."""

    name = "raw sqlite3+to_thread"
    family: Family = "raw"
    abilities = EVERYTHING
    shares_schema = True

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        # One connection, so calls take turns (the same queueing chatmemory does for writers).
        self._lock = asyncio.Lock()

    async def start(self, store: Store) -> None:
        await migrate(store)
        assert store.path is not None
        conn = sqlite3.connect(store.path, check_same_thread=False, isolation_level=None)
        for pragma in SQLITE_PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        self._conn = conn

    async def _hop(self, work: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None
        conn = self._conn
        async with self._lock:
            return await asyncio.to_thread(work, conn)

    async def conversation(self, owner: str) -> SchemaConversation:
        conv, conv_row, history_row = sql.new_conversation(owner, sql.SQLITE)

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(sql.INSERT_CONVERSATION, conv_row)
                conn.execute(sql.INSERT_HISTORY, history_row)

        await self._hop(work)
        return conv

    async def append(self, conversation: SchemaConversation, batch: Sequence[Msg]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            when = sql.now()
            with _transaction(conn):
                (last,) = conn.execute(
                    sql.BUMP, sql.bump_params(conversation, batch, sql.SQLITE, when)
                ).fetchone()
                conn.executemany(
                    sql.INSERT_MESSAGE, sql.message_rows(conversation, batch, last, sql.SQLITE, when)
                )

        await self._hop(work)

    async def read_last(self, conversation: SchemaConversation, n: int) -> list[str]:
        params = (conversation.conversation_id.hex, conversation.owner, n)
        rows = await self._hop(lambda conn: conn.execute(sql.READ_LAST, params).fetchall())
        return [row[sql.CONTENT] for row in reversed(rows)]

    async def read_all(self, conversation: SchemaConversation) -> list[str]:
        params = (conversation.conversation_id.hex, conversation.owner)
        rows = await self._hop(lambda conn: conn.execute(sql.READ_ALL, params).fetchall())
        return [row[sql.CONTENT] for row in rows]

    async def recent(self, owner: str, n: int) -> list[str | None]:
        rows = await self._hop(lambda conn: conn.execute(sql.RECENT, (owner, n)).fetchall())
        return [row[sql.PREVIEW] for row in rows]

    async def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error (sqlite3 in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


class AiosqliteSystem:
    """One aiosqlite connection (every statement is a hop to its worker thread)."""

    name = "raw aiosqlite"
    family: Family = "raw"
    abilities = EVERYTHING
    shares_schema = True

    def __init__(self) -> None:
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def start(self, store: Store) -> None:
        import aiosqlite

        await migrate(store)
        assert store.path is not None
        self._conn = await aiosqlite.connect(store.path, isolation_level=None)
        for pragma in SQLITE_PRAGMAS:
            await self._conn.execute(f"PRAGMA {pragma}")

    async def _write(self, statements: Callable[[Any], Any]) -> None:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                await statements(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def conversation(self, owner: str) -> SchemaConversation:
        conv, conv_row, history_row = sql.new_conversation(owner, sql.SQLITE)

        async def statements(conn: Any) -> None:
            await conn.execute(sql.INSERT_CONVERSATION, conv_row)
            await conn.execute(sql.INSERT_HISTORY, history_row)

        await self._write(statements)
        return conv

    async def append(self, conversation: SchemaConversation, batch: Sequence[Msg]) -> None:
        async def statements(conn: Any) -> None:
            when = sql.now()
            cursor = await conn.execute(sql.BUMP, sql.bump_params(conversation, batch, sql.SQLITE, when))
            (last,) = await cursor.fetchone()
            await cursor.close()
            await conn.executemany(
                sql.INSERT_MESSAGE, sql.message_rows(conversation, batch, last, sql.SQLITE, when)
            )

        await self._write(statements)

    async def _fetch(self, query: str, params: tuple[Any, ...]) -> list[Any]:
        async with self._lock:
            rows: list[Any] = list(await self._conn.execute_fetchall(query, params))
        return rows

    async def read_last(self, conversation: SchemaConversation, n: int) -> list[str]:
        rows = await self._fetch(sql.READ_LAST, (conversation.conversation_id.hex, conversation.owner, n))
        return [row[sql.CONTENT] for row in reversed(rows)]

    async def read_all(self, conversation: SchemaConversation) -> list[str]:
        rows = await self._fetch(sql.READ_ALL, (conversation.conversation_id.hex, conversation.owner))
        return [row[sql.CONTENT] for row in rows]

    async def recent(self, owner: str, n: int) -> list[str | None]:
        rows = await self._fetch(sql.RECENT, (owner, n))
        return [row[sql.PREVIEW] for row in rows]

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        self._conn = None
