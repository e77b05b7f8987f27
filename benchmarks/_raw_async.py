"""Raw async clients of chatmemory's schema: asyncpg (PostgreSQL) and SQLAlchemy Core (both)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from benchmarks import _raw_sql as sql
from benchmarks._data import MODEL, Msg, uuid7
from benchmarks._raw_sqlite import migrate
from benchmarks._system import EVERYTHING, Family, SchemaConversation
from benchmarks._targets import SQLITE_PRAGMAS, Store

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
        import asyncpg

        await migrate(store)
        self._pool = await asyncpg.create_pool(**store.asyncpg_args(), min_size=1, max_size=POOL_SIZE)

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


_meta = sa.MetaData()
_when = sa.DateTime(timezone=True)
_CONVERSATIONS = sa.Table(
    "chat_conversations", _meta,
    sa.Column("id", sa.Uuid(), primary_key=True), sa.Column("owner_id", sa.String()),
    sa.Column("tenant_id", sa.String()), sa.Column("title", sa.Text()), sa.Column("metadata", sa.JSON()),
    sa.Column("pinned_at", _when), sa.Column("archived_at", _when), sa.Column("last_seq", sa.BigInteger()),
    sa.Column("message_count", sa.Integer()), sa.Column("last_message_preview", sa.Text()),
    sa.Column("created_at", _when), sa.Column("updated_at", _when), sa.Column("deleted_at", _when),
)  # fmt: skip
C = _CONVERSATIONS.c
H = sa.Table(
    "chat_histories", _meta,
    sa.Column("id", sa.Uuid(), primary_key=True), sa.Column("chat_conversation_id", sa.Uuid()),
    sa.Column("model", sa.String()), sa.Column("status", sa.String()),
    sa.Column("created_at", _when), sa.Column("updated_at", _when),
)  # fmt: skip
M = sa.Table(
    "chat_messages", _meta,
    sa.Column("id", sa.Uuid(), primary_key=True), sa.Column("chat_conversation_id", sa.Uuid()),
    sa.Column("chat_history_id", sa.Uuid()), sa.Column("seq", sa.BigInteger()), sa.Column("role", sa.String()),
    sa.Column("content", sa.Text()), sa.Column("parts", sa.JSON()), sa.Column("model", sa.String()),
    sa.Column("status", sa.String()), sa.Column("error", sa.Text()), sa.Column("usage", sa.JSON()),
    sa.Column("metadata", sa.JSON()), sa.Column("native", sa.JSON()), sa.Column("key", sa.String()),
    sa.Column("created_at", _when), sa.Column("updated_at", _when), sa.Column("deleted_at", _when),
)  # fmt: skip


def _scoped(owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(C.owner_id == owner, C.tenant_id.is_(None), C.deleted_at.is_(None))


_MESSAGE_COLUMNS = [c for c in M.c if c.name != "deleted_at"]


class CoreSystem:
    """SQLAlchemy Core on an async engine (aiosqlite or asyncpg), no ORM and no models."""

    name = "raw SQLAlchemy Core"
    family: Family = "raw"
    abilities = EVERYTHING
    shares_schema = True

    def __init__(self) -> None:
        self._engine: AsyncEngine | None = None
        self._lock: asyncio.Lock | None = None

    async def start(self, store: Store) -> None:
        await migrate(store)
        engine = create_async_engine(store.async_url)
        if store.backend == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            self._lock = asyncio.Lock()
        self._engine = engine

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        assert self._engine is not None
        async with self._lock or contextlib.nullcontext(), self._engine.begin() as conn:
            yield conn

    async def conversation(self, owner: str) -> SchemaConversation:
        conv = SchemaConversation(owner, uuid7(), uuid7())
        when = sql.now()
        async with self._write() as conn:
            await conn.execute(
                sa.insert(_CONVERSATIONS).values(
                    id=conv.conversation_id, owner_id=owner, title="benchmark", metadata={}, last_seq=0,
                    message_count=0, created_at=when, updated_at=when,
                )
            )  # fmt: skip
            await conn.execute(
                sa.insert(H).values(
                    id=conv.history_id, chat_conversation_id=conv.conversation_id, model=MODEL,
                    status="running", created_at=when, updated_at=when,
                )
            )  # fmt: skip
        return conv

    async def append(self, conversation: SchemaConversation, batch: Sequence[Msg]) -> None:
        when, n = sql.now(), len(batch)
        bump = (
            sa.update(_CONVERSATIONS)
            .where(C.id == conversation.conversation_id, _scoped(conversation.owner))
            .values(
                last_seq=C.last_seq + n, message_count=C.message_count + n,
                last_message_preview=batch[-1].text[: sql.PREVIEW_CHARS], updated_at=when,
            )
            .returning(C.last_seq)
        )  # fmt: skip
        async with self._write() as conn:
            last = (await conn.execute(bump)).scalar_one()
            rows = [
                {
                    "id": uuid7(), "chat_conversation_id": conversation.conversation_id,
                    "chat_history_id": conversation.history_id, "seq": last - n + 1 + i, "role": m.role,
                    "content": m.text, "model": MODEL if m.role == "assistant" else None,
                    "status": "complete", "created_at": when, "updated_at": when,
                }
                for i, m in enumerate(batch)
            ]  # fmt: skip
            await conn.execute(sa.insert(M), rows)

    def _messages(self, conversation: SchemaConversation) -> sa.Select[Any]:
        return (
            sa.select(*_MESSAGE_COLUMNS)
            .join(_CONVERSATIONS, C.id == M.c.chat_conversation_id)
            .where(
                M.c.chat_conversation_id == conversation.conversation_id,
                _scoped(conversation.owner),
                M.c.deleted_at.is_(None),
            )
        )

    async def _rows(self, query: sa.Select[Any]) -> list[Any]:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def read_last(self, conversation: SchemaConversation, n: int) -> list[str]:
        rows = await self._rows(self._messages(conversation).order_by(M.c.seq.desc()).limit(n))
        return [row.content for row in reversed(rows)]

    async def read_all(self, conversation: SchemaConversation) -> list[str]:
        rows = await self._rows(self._messages(conversation).order_by(M.c.seq))
        return [row.content for row in rows]

    async def recent(self, owner: str, n: int) -> list[str | None]:
        query = (
            sa.select(*(c for c in C if c.name not in {"last_seq", "deleted_at"}))
            .where(_scoped(owner), C.archived_at.is_(None))
            .order_by(C.pinned_at.is_not(None).desc(), C.updated_at.desc(), C.id.desc())
            .limit(n)
        )
        return [row.last_message_preview for row in await self._rows(query)]

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()
