"""A raw asyncpg client of chatmemory's schema (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks import _raw_sql as sql
from benchmarks._data import Msg
from benchmarks._raw_sqlite import migrate
from benchmarks._system import EVERYTHING, Family, SchemaConversation
from benchmarks._targets import Store, asyncpg

POOL_SIZE = 10


class AsyncpgSystem:
    """An asyncpg pool; each call is one pooled connection and, for writes, one transaction."""

    name = "raw asyncpg"
    family: Family = "raw"
    abilities = EVERYTHING
    shares_schema = True
    _bump, _insert = sql.numbered(sql.BUMP), sql.numbered(sql.INSERT_MESSAGE)
    _last, _all, _recent = sql.numbered(sql.READ_LAST), sql.numbered(sql.READ_ALL), sql.numbered(sql.RECENT)

    def __init__(self) -> None:
        self._pool: Any = None

    async def start(self, store: Store) -> None:
        await migrate(store)
        self._pool = await asyncpg().create_pool(**store.asyncpg_args(), min_size=1, max_size=POOL_SIZE)

    async def conversation(self, owner: str) -> SchemaConversation:
        conv, conv_row, history_row = sql.new_conversation(owner, sql.POSTGRES)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(sql.numbered(sql.INSERT_CONVERSATION), *conv_row)
            await conn.execute(sql.numbered(sql.INSERT_HISTORY), *history_row)
        return conv

    async def append(self, conversation: SchemaConversation, batch: Sequence[Msg]) -> None:
        when = sql.now()
        async with self._pool.acquire() as conn, conn.transaction():
            last = await conn.fetchval(self._bump, *sql.bump_params(conversation, batch, sql.POSTGRES, when))
            await conn.executemany(
                self._insert, sql.message_rows(conversation, batch, last, sql.POSTGRES, when)
            )

    async def read_last(self, conversation: SchemaConversation, n: int) -> list[str]:
        rows = await self._pool.fetch(self._last, conversation.conversation_id, conversation.owner, n)
        return [row[sql.CONTENT] for row in reversed(rows)]

    async def read_all(self, conversation: SchemaConversation) -> list[str]:
        rows = await self._pool.fetch(self._all, conversation.conversation_id, conversation.owner)
        return [row[sql.CONTENT] for row in rows]

    async def recent(self, owner: str, n: int) -> list[str | None]:
        rows = await self._pool.fetch(self._recent, owner, n)
        return [row[sql.PREVIEW] for row in rows]

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self._pool = None
