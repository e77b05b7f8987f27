"""OpenAI Agents SDK sessions: SQLiteSession, AsyncSQLiteSession and SQLAlchemySession.

Each conversation is one session holding Responses-API items: the user's message as the SDK
stores input, the assistant's as the SDK stores model output. Sessions cannot list
conversations, so the listing workload is n/a.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from benchmarks._data import Msg
from benchmarks._system import APPEND, CONCURRENT, READ_ALL, READ_LAST, Family, unsupported
from benchmarks._targets import SQLITE_PEER_PRAGMAS, Store

ABILITIES = frozenset({APPEND, READ_LAST, READ_ALL, CONCURRENT})


def item(m: Msg) -> dict[str, Any]:
    """The Responses-API item the SDK would store for ``m``."""
    if m.role == "user":
        return {"role": "user", "content": m.text}
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": m.text, "annotations": []}],
    }


def item_text(stored: Any) -> str:
    """The text of a stored item."""
    content = stored["content"]
    return content if isinstance(content, str) else str(content[0]["text"])


class _AgentsSessions:
    """What the three session classes share: one session object per conversation."""

    name = ""
    family: Family = "peer"
    abilities = ABILITIES
    shares_schema = False

    def __init__(self) -> None:
        self._sessions: list[Any] = []

    def _session(self, session_id: str) -> Any:
        raise NotImplementedError

    async def conversation(self, owner: str) -> Any:
        session = self._session(f"{owner}-{uuid.uuid4().hex}")
        self._sessions.append(session)
        await session.get_items(limit=1)  # opens its connection and creates its tables
        return session

    async def append(self, conversation: Any, batch: Sequence[Msg]) -> None:
        await conversation.add_items([item(m) for m in batch])

    async def read_last(self, conversation: Any, n: int) -> list[str]:
        return [item_text(i) for i in await conversation.get_items(limit=n)]

    async def read_all(self, conversation: Any) -> list[str]:
        return [item_text(i) for i in await conversation.get_items()]

    async def recent(self, owner: str, n: int) -> list[str | None]:
        raise unsupported(self.name)

    async def _close(self, session: Any) -> None:
        session.close()

    async def stop(self) -> None:
        for session in self._sessions:
            await self._close(session)
        self._sessions.clear()


class SQLiteSessionSystem(_AgentsSessions):
    """``agents.SQLiteSession`` on a file (sqlite3 in worker threads)."""

    name = "openai-agents SQLiteSession"

    async def start(self, store: Store) -> None:
        from agents import SQLiteSession

        class Session(SQLiteSession):
            @staticmethod
            def _configure_connection(conn: Any) -> None:
                SQLiteSession._configure_connection(conn)
                for pragma in SQLITE_PEER_PRAGMAS:
                    conn.execute(f"PRAGMA {pragma}")

        self._cls: Any = Session
        self._path = store.path

    def _session(self, session_id: str) -> Any:
        return self._cls(session_id, self._path)


class AsyncSQLiteSessionSystem(_AgentsSessions):
    """``agents.extensions.memory.AsyncSQLiteSession`` on a file (aiosqlite)."""

    name = "openai-agents AsyncSQLiteSession"

    async def start(self, store: Store) -> None:
        from agents.extensions.memory import AsyncSQLiteSession

        class Session(AsyncSQLiteSession):
            @staticmethod
            async def _configure_connection(conn: Any) -> None:
                await AsyncSQLiteSession._configure_connection(conn)
                for pragma in SQLITE_PEER_PRAGMAS:
                    await conn.execute(f"PRAGMA {pragma}")

        self._cls: Any = Session
        self._path = store.path

    def _session(self, session_id: str) -> Any:
        return self._cls(session_id, self._path)

    async def _close(self, session: Any) -> None:
        await session.close()


class SQLAlchemySessionSystem(_AgentsSessions):
    """``agents.extensions.memory.SQLAlchemySession`` on one async engine (aiosqlite or asyncpg)."""

    name = "openai-agents SQLAlchemySession"

    async def start(self, store: Store) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self._engine = create_async_engine(store.async_url)
        if store.backend == "sqlite":
            sa.event.listen(self._engine.sync_engine, "connect", peer_sqlite_pragmas)

    def _session(self, session_id: str) -> Any:
        from agents.extensions.memory import SQLAlchemySession

        return SQLAlchemySession(session_id, engine=self._engine, create_tables=True)

    async def _close(self, session: Any) -> None:
        pass

    async def stop(self) -> None:
        await super().stop()
        await self._engine.dispose()


def peer_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """The durability settings every peer runs with on SQLite (WAL, synchronous=NORMAL)."""
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PEER_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()
