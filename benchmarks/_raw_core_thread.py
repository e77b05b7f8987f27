"""SQLAlchemy Core on a synchronous SQLite engine, one ``asyncio.to_thread`` hop per call.

It issues the same Core statements as the async Core system; the difference between the
two is what per-statement thread hops cost (aiosqlite runs every DBAPI call on its thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from benchmarks import _raw_core as core
from benchmarks._data import Msg
from benchmarks._raw_sqlite import migrate
from benchmarks._system import EVERYTHING, Family, SchemaConversation
from benchmarks._targets import Store

T = TypeVar("T")


class CoreThreadSystem:
    """A sync engine (pysqlite) whose whole transaction runs in one worker-thread hop."""

    name = "raw SQLAlchemy Core sync+to_thread"
    family: Family = "raw"
    abilities = EVERYTHING
    shares_schema = True

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._lock = asyncio.Lock()

    async def start(self, store: Store) -> None:
        await migrate(store)
        engine = sa.create_engine(store.url)
        sa.event.listen(engine, "connect", core.sqlite_pragmas)
        self._engine = engine

    async def _hop(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        engine = self._engine
        assert engine is not None

        def transaction() -> T:
            with engine.begin() as conn:
                return work(conn)

        if not write:
            return await asyncio.to_thread(transaction)
        async with self._lock:
            return await asyncio.to_thread(transaction)

    async def conversation(self, owner: str) -> SchemaConversation:
        conv, statements = core.new_conversation_statements(owner)

        def work(conn: Connection) -> None:
            for statement in statements:
                conn.execute(statement)

        await self._hop(work, write=True)
        return conv

    async def append(self, conversation: SchemaConversation, batch: Sequence[Msg]) -> None:
        def work(conn: Connection) -> None:
            bump, rows = core.append_statements(conversation, batch)
            last = conn.execute(bump).scalar_one()
            conn.execute(sa.insert(core.M), rows(last))

        await self._hop(work, write=True)

    async def _rows(self, query: sa.Select[Any]) -> list[Any]:
        return await self._hop(lambda conn: list(conn.execute(query).all()))

    async def read_last(self, conversation: SchemaConversation, n: int) -> list[str]:
        rows = await self._rows(core.last_query(conversation, n))
        return [row.content for row in reversed(rows)]

    async def read_all(self, conversation: SchemaConversation) -> list[str]:
        return [row.content for row in await self._rows(core.all_query(conversation))]

    async def recent(self, owner: str, n: int) -> list[str | None]:
        return [row.last_message_preview for row in await self._rows(core.recent_query(owner, n))]

    async def stop(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None
