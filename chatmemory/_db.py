"""Engines, connections and the transaction boundary where database errors are translated."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import URL, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util.concurrency import await_

from chatmemory.errors import ChatMemoryError, InvalidInputError, StorageError

ENV_URL = "CHATMEMORY_URL"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE = "chatmemory_write"


def default_url() -> str:
    """``$CHATMEMORY_URL``, else a SQLite file in the user's data directory (created on demand)."""
    url = os.environ.get(ENV_URL)
    if url:
        return url
    from platformdirs import user_data_path

    return f"sqlite:///{user_data_path('chatmemory') / 'chatmemory.db'}"


def resolve_url(url: str | URL | None) -> URL:
    """Map plain ``sqlite://`` and ``postgresql://`` URLs to the async drivers chatmemory uses.

    Raises:
        InvalidInputError: the URL cannot be parsed or names an unsupported database.
    """
    try:
        parsed = make_url(url if url is not None else default_url())
    except ArgumentError as exc:
        raise InvalidInputError("url", "is not a database URL") from exc
    driver = parsed.drivername
    if driver in {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}:
        parsed = parsed.set(drivername="sqlite+aiosqlite")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return parsed
    if driver in {
        "postgres",
        "postgresql",
        "postgresql+asyncpg",
        "postgresql+psycopg",
        "postgresql+psycopg2",
    }:
        return parsed.set(drivername="postgresql+asyncpg")
    raise InvalidInputError("url", f"unsupported database {driver!r}; use sqlite:/// or postgresql://")


def sync_url(url: URL) -> URL:
    """The same database through a synchronous driver (for offline SQL and tools)."""
    return url.set(drivername="sqlite" if url.get_backend_name() == "sqlite" else "postgresql+psycopg")


def create_engine(url: str | URL | None = None, **options: Any) -> AsyncEngine:
    """An async engine for ``url``, configured for chatmemory (SQLite: WAL, foreign keys, busy timeout).

    Raises:
        InvalidInputError: the URL is malformed or names a database this installation cannot reach.
    """
    # Every transaction ends in an explicit commit or rollback, so the pool need not reset.
    options.setdefault("pool_reset_on_return", None)
    resolved = resolve_url(url)
    if resolved.get_backend_name() == "postgresql" and importlib.util.find_spec("asyncpg") is None:
        raise InvalidInputError("url", "PostgreSQL needs asyncpg: pip install 'chatmemory-core[postgres]'")
    engine = create_async_engine(resolved, **options)
    prepare_engine(engine)
    return engine


def prepare_engine(engine: AsyncEngine) -> None:
    """Install the SQLite connection settings chatmemory relies on (idempotent; no-op elsewhere)."""
    if engine.dialect.name != "sqlite" or event.contains(engine.sync_engine, "connect", _on_sqlite_connect):
        return
    event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    event.listen(engine.sync_engine, "begin", _on_sqlite_begin)


def _on_sqlite_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's begin event, not the driver, decide when and how a transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        f"busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
        "journal_mode = WAL",
        # NORMAL in WAL mode never loses a committed transaction when a process crashes.
        "synchronous = NORMAL",
        "foreign_keys = ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _on_sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front, so two writers never deadlock on an upgrade.
    write = connection.get_execution_options().get(_WRITE, False)
    statement = "BEGIN IMMEDIATE" if write else "BEGIN"
    driver = connection.connection.driver_connection
    if isinstance(driver, aiosqlite.Connection):
        # One trip to aiosqlite's thread, where a cursor would take three.
        await_(driver.execute(statement))
    else:
        connection.exec_driver_sql(statement)


class Database:
    """An engine plus the one place where transactions start and errors are translated."""

    def __init__(self, engine: AsyncEngine) -> None:
        prepare_engine(engine)
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer at a time; queueing in-process writers here is far cheaper
        # than letting them spin on the file lock. Other processes still wait on the lock.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @contextlib.asynccontextmanager
    async def transaction(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction; commits on success, rolls back on any error.

        Raises:
            StorageError: the database failed; nothing was committed.
        """
        lock = self._write_lock if write else None
        try:
            async with lock or contextlib.nullcontext(), self.engine.connect() as conn:
                if write and self.is_sqlite:
                    await conn.execution_options(**{_WRITE: True})
                async with conn.begin():
                    yield conn
        except ChatMemoryError:
            raise
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise StorageError(f"database error: {type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:300] if text else ""
