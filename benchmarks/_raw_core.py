"""SQLAlchemy Core on chatmemory's schema (no ORM, no models), on an async engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from benchmarks import _raw_sql as sql
from benchmarks._data import MODEL, Msg, uuid7
from benchmarks._raw_sqlite import migrate
from benchmarks._system import EVERYTHING, Family, SchemaConversation
from benchmarks._targets import SQLITE_PRAGMAS, Store

_meta = sa.MetaData()
_when = sa.DateTime(timezone=True)
CONVERSATIONS = sa.Table(
    "chat_conversations", _meta,
    sa.Column("id", sa.Uuid(), primary_key=True), sa.Column("owner_id", sa.String()),
    sa.Column("tenant_id", sa.String()), sa.Column("title", sa.Text()), sa.Column("metadata", sa.JSON()),
    sa.Column("pinned_at", _when), sa.Column("archived_at", _when), sa.Column("last_seq", sa.BigInteger()),
    sa.Column("message_count", sa.Integer()), sa.Column("last_message_preview", sa.Text()),
    sa.Column("created_at", _when), sa.Column("updated_at", _when), sa.Column("deleted_at", _when),
)  # fmt: skip
C = CONVERSATIONS.c
H = sa.Table(
    "chat_histories", _meta,
    sa.Column("id", sa.Uuid(), primary_key=True), sa.Column("chat_conversation_id", sa.Uuid()),
    sa.Column("model", sa.String()), sa.Column("status", sa.String()),
    sa.Column("created_at", _when), sa.Column("updated_at", _when),
)  # fmt: skip
M = sa.Table(
    "chat_messages", _meta,
    sa.Column("id", sa.Uuid(), primary_key=True), sa.Column("chat_conversation_id", sa.Uuid()),
    sa.Column("chat_history_id", sa.Uuid()), sa.Column("seq", sa.BigInteger()),
    sa.Column("role", sa.String()),
    sa.Column("content", sa.Text()), sa.Column("parts", sa.JSON()), sa.Column("model", sa.String()),
    sa.Column("status", sa.String()), sa.Column("error", sa.Text()), sa.Column("usage", sa.JSON()),
    sa.Column("metadata", sa.JSON()), sa.Column("native", sa.JSON()), sa.Column("key", sa.String()),
    sa.Column("created_at", _when), sa.Column("updated_at", _when), sa.Column("deleted_at", _when),
)  # fmt: skip
_MESSAGE_COLUMNS = [c for c in M.c if c.name != "deleted_at"]
_SUMMARY_COLUMNS = [c for c in C if c.name not in {"last_seq", "deleted_at"}]


def _scoped(owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(C.owner_id == owner, C.tenant_id.is_(None), C.deleted_at.is_(None))


def new_conversation_statements(owner: str) -> tuple[SchemaConversation, list[sa.Insert]]:
    """A conversation with one running history, and the two inserts that create it."""
    conv = SchemaConversation(owner, uuid7(), uuid7())
    when = sql.now()
    return conv, [
        sa.insert(CONVERSATIONS).values(
            id=conv.conversation_id, owner_id=owner, title="benchmark", metadata={}, last_seq=0,
            message_count=0, created_at=when, updated_at=when,
        ),
        sa.insert(H).values(
            id=conv.history_id, chat_conversation_id=conv.conversation_id, model=MODEL,
            status="running", created_at=when, updated_at=when,
        ),
    ]  # fmt: skip


def append_statements(
    conversation: SchemaConversation, batch: Sequence[Msg]
) -> tuple[sa.Update, Callable[[int], list[dict[str, Any]]]]:
    """The owner-checked bump returning the new ``last_seq``, and the message rows ending there."""
    when, n = sql.now(), len(batch)
    bump = (
        sa.update(CONVERSATIONS)
        .where(C.id == conversation.conversation_id, _scoped(conversation.owner))
        .values(
            last_seq=C.last_seq + n, message_count=C.message_count + n,
            last_message_preview=batch[-1].text[: sql.PREVIEW_CHARS], updated_at=when,
        )
        .returning(C.last_seq)
    )  # fmt: skip

    def rows(last: int) -> list[dict[str, Any]]:
        return [
            {
                "id": uuid7(), "chat_conversation_id": conversation.conversation_id,
                "chat_history_id": conversation.history_id, "seq": last - n + 1 + i, "role": m.role,
                "content": m.text, "model": MODEL if m.role == "assistant" else None,
                "status": "complete", "created_at": when, "updated_at": when,
            }
            for i, m in enumerate(batch)
        ]  # fmt: skip

    return bump, rows


def _messages(conversation: SchemaConversation) -> sa.Select[Any]:
    return (
        sa.select(*_MESSAGE_COLUMNS)
        .join(CONVERSATIONS, C.id == M.c.chat_conversation_id)
        .where(
            M.c.chat_conversation_id == conversation.conversation_id,
            _scoped(conversation.owner),
            M.c.deleted_at.is_(None),
        )
    )


def last_query(conversation: SchemaConversation, n: int) -> sa.Select[Any]:
    """The newest ``n`` messages, newest first."""
    return _messages(conversation).order_by(M.c.seq.desc()).limit(n)


def all_query(conversation: SchemaConversation) -> sa.Select[Any]:
    """Every message in ``seq`` order."""
    return _messages(conversation).order_by(M.c.seq)


def recent_query(owner: str, n: int) -> sa.Select[Any]:
    """The owner's conversations, pinned first, then most recently updated."""
    return (
        sa.select(*_SUMMARY_COLUMNS)
        .where(_scoped(owner), C.archived_at.is_(None))
        .order_by(C.pinned_at.is_not(None).desc(), C.updated_at.desc(), C.id.desc())
        .limit(n)
    )


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """chatmemory's SQLite settings, on a raw connection."""
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class CoreSystem:
    """SQLAlchemy Core on an async engine (aiosqlite or asyncpg)."""

    name = "raw SQLAlchemy Core async"
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
            sa.event.listen(engine.sync_engine, "connect", sqlite_pragmas)
            self._lock = asyncio.Lock()
        self._engine = engine

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        assert self._engine is not None
        async with self._lock or contextlib.nullcontext(), self._engine.begin() as conn:
            yield conn

    async def conversation(self, owner: str) -> SchemaConversation:
        conv, statements = new_conversation_statements(owner)
        async with self._write() as conn:
            for statement in statements:
                await conn.execute(statement)
        return conv

    async def append(self, conversation: SchemaConversation, batch: Sequence[Msg]) -> None:
        bump, rows = append_statements(conversation, batch)
        async with self._write() as conn:
            last = (await conn.execute(bump)).scalar_one()
            await conn.execute(sa.insert(M), rows(last))

    async def _rows(self, query: sa.Select[Any]) -> list[Any]:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def read_last(self, conversation: SchemaConversation, n: int) -> list[str]:
        rows = await self._rows(last_query(conversation, n))
        return [row.content for row in reversed(rows)]

    async def read_all(self, conversation: SchemaConversation) -> list[str]:
        return [row.content for row in await self._rows(all_query(conversation))]

    async def recent(self, owner: str, n: int) -> list[str | None]:
        return [row.last_message_preview for row in await self._rows(recent_query(owner, n))]

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = None
