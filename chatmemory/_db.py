"""Engines, connections and the transaction boundary where database errors are translated."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sqlite3
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import URL, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.util.concurrency import await_

from chatmemory.errors import ChatMemoryError, InvalidInputError, StorageError

ENV_URL = "CHATMEMORY_URL"
SQLITE_BUSY_TIMEOUT_MS = 30_000
CLOSE_TIMEOUT_S = 10
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


class LoopLock:
    """A mutex that tasks on any event loop, in any thread, can await.

    ``asyncio.Lock`` binds itself to the first loop that waits on it; this one hands the lock
    to the next waiter on that waiter's own loop, so writers from several threads queue fairly.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._mutex:
            if not self._held:
                self._held = True
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with self._mutex:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise
            # The lock was handed over just as the wait was cancelled: pass it on.
            self.release()
            raise

    def release(self) -> None:
        with self._mutex:
            while self._waiters:
                waiter = self._waiters.popleft()
                try:
                    waiter.get_loop().call_soon_threadsafe(_grant, waiter)
                except RuntimeError:  # That waiter's loop is closed: it will never run.
                    continue
                return
            self._held = False

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()


def _grant(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
    # A waiter cancelled before the grant ran is still queued-out; its cancel path releases.


class Database:
    """An engine plus the one place where transactions start and errors are translated.

    Driver connections belong to the event loop that opened them, so the pooled engine serves
    the loop that first used it; calls from any other loop (another thread's ``asyncio.run``)
    get a connection of their own for the duration of the call, never a pooled one.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        prepare_engine(engine)
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer at a time; queueing in-process writers here is far cheaper
        # than letting them spin on the file lock. Other processes still wait on the lock.
        self._write_lock = LoopLock() if self.is_sqlite else None
        self._home: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._home_guard = threading.Lock()
        # Engines are not loop-safe even unpooled (first-connect set-up holds a loop-bound
        # lock), so each foreign loop gets its own; they keep no connections between calls.
        self._unpooled: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = (
            weakref.WeakKeyDictionary()
        )

    def _engine_for_this_loop(self) -> AsyncEngine:
        loop = asyncio.get_running_loop()
        with self._home_guard:
            home = self._home() if self._home is not None else None
            if home is None and self._home is None:
                self._home = weakref.ref(loop)
                return self.engine
            if home is loop:
                return self.engine
            engine = self._unpooled.get(loop)
            if engine is None:
                engine = self._unpooled[loop] = create_async_engine(self.engine.url, poolclass=NullPool)
                prepare_engine(engine)
            return engine

    async def dispose(self) -> None:
        """Close the pooled connections, on the loop that opened them."""
        loop = asyncio.get_running_loop()
        home = self._home() if self._home is not None else None
        if self.is_sqlite or home is None or home is loop:
            await self.engine.dispose()  # aiosqlite connections can be closed from any loop.
        elif home.is_running():
            done = asyncio.run_coroutine_threadsafe(self.engine.dispose(), home)
            await asyncio.wait_for(asyncio.wrap_future(done), CLOSE_TIMEOUT_S)
        else:
            # The loop that opened these asyncpg connections is gone, and with it any way to
            # close them politely; drop them (the server ends the sessions when they go).
            self.engine.sync_engine.dispose(close=False)
        for engine in list(self._unpooled.values()):
            engine.sync_engine.dispose(close=False)  # NullPool: nothing is held open.

    @contextlib.asynccontextmanager
    async def transaction(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction; commits on success, rolls back on any error.

        Raises:
            StorageError: the database failed; nothing was committed.
        """
        lock = self._write_lock.held() if write and self._write_lock is not None else None
        try:
            engine = self._engine_for_this_loop()
            async with lock or contextlib.nullcontext(), engine.connect() as conn:
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
