"""Engines, connections and the transaction boundary where database errors are translated."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import os
import sqlite3
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite
from sqlalchemy import URL, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.util.concurrency import await_

from chatmemory import _sql
from chatmemory._changes import logged
from chatmemory._engine_driver import EngineDriver, one_at_a_time
from chatmemory._plan import Plan, Stmt
from chatmemory._sqlite_driver import BUSY_TIMEOUT_MS as SQLITE_BUSY_TIMEOUT_MS
from chatmemory._sqlite_driver import Closed, SQLiteDriver, configure
from chatmemory._sqlite_driver import file_of as _file_of
from chatmemory._wakeup import ChangeHub
from chatmemory.errors import ChatMemoryError, CorruptDataError, InvalidInputError, StorageError

if TYPE_CHECKING:
    from chatmemory._postgres_driver import PostgresDriver

__all__ = [
    "QUICK_ROWS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Database",
    "create_engine",
    "default_url",
    "resolve_url",
    "sync_url",
]

ENV_URL = "CHATMEMORY_URL"
# A plan of at most this many rows may run on its caller's thread (see ``Database.run``).
QUICK_ROWS = 100
_WRITE = "chatmemory_write"
# Set in a pooled connection's ``info`` once chatmemory's SQLite settings are on it.
_CONFIGURED = "chatmemory_configured"
# The query parameters SQLAlchemy's SQLite dialect takes for itself rather than for the URI.
_SQLALCHEMY_SQLITE_PARAMS = frozenset(
    {"uri", "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements"}
)
_POOL_OPTIONS = ("pool_size", "max_overflow", "pool_timeout", "pool_recycle", "pool_pre_ping", "poolclass")
T = TypeVar("T")
_BASE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, SQLAlchemyError)


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The errors a driver raises. asyncpg is optional and imported only for PostgreSQL; until
    it is, none of its errors can occur."""
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is None:
        return _BASE_ERRORS
    return (*_BASE_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


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
        StorageError: the directory of the SQLite file it names cannot be made.
    """
    try:
        parsed = make_url(url if url is not None else default_url())
    except ArgumentError as exc:
        raise InvalidInputError("url", "is not a database URL") from exc
    driver = parsed.drivername
    if driver in {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}:
        parsed = parsed.set(drivername="sqlite+aiosqlite")
        if parsed.database and not in_memory(parsed):
            # Absolute: the store opens connections as calls need them, each on this file
            # whatever directory the process works in by then.
            database = _absolute(parsed.database)
            directory = Path(_file_of(database)).parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot make the SQLite file's directory {str(directory)!r}: {exc.strerror or exc}"
                ) from exc
            parsed = parsed.set(database=database)
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
    """An async engine for ``url``, configured for chatmemory (SQLite: WAL, foreign keys, busy
    timeout; PostgreSQL: libpq parameters in the URL as asyncpg's, see ``_postgres_url``).

    Raises:
        InvalidInputError: the URL is malformed, names a database this installation cannot
            reach, or holds a connection parameter asyncpg does not take.
    """
    # Every transaction ends in an explicit commit or rollback, so the pool need not reset.
    options.setdefault("pool_reset_on_return", None)
    resolved = resolve_url(url)
    postgres = resolved.get_backend_name() == "postgresql"
    if postgres and importlib.util.find_spec("asyncpg") is None:
        raise InvalidInputError("url", "PostgreSQL needs asyncpg: pip install 'chatmemory-core[postgres]'")
    if postgres:
        from chatmemory._postgres_url import connect_options

        connect_options(resolved, options.get("connect_args"))  # refused now rather than at connect
    engine = create_async_engine(resolved, **options)
    if postgres:
        event.listen(engine.sync_engine, "do_connect", _on_postgres_connect)
    prepare_engine(engine)
    return engine


def _on_postgres_connect(
    _dialect: Any, _record: ConnectionPoolEntry, _args: list[Any], params: dict[str, Any]
) -> None:
    """The engine connects with the arguments the store's own connections get (libpq parameters
    translated, see ``_postgres_url``)."""
    from chatmemory._postgres_url import asyncpg_arguments

    translated = asyncpg_arguments(params)
    params.clear()
    params.update(translated)


def prepare_engine(engine: AsyncEngine) -> None:
    """Install the SQLite connection settings chatmemory relies on (idempotent; no-op elsewhere)."""
    if engine.dialect.name != "sqlite" or event.contains(engine.sync_engine, "connect", _on_sqlite_connect):
        return
    event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    # A connection its pool held before (a caller's engine, used before the store) gets them
    # when it is next checked out.
    event.listen(engine.sync_engine, "checkout", _on_sqlite_checkout)
    event.listen(engine.sync_engine, "begin", _on_sqlite_begin)


def _on_sqlite_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's begin event, not the driver, decide when and how a transaction starts.
    configure(dbapi_connection)
    record.info[_CONFIGURED] = True


def _on_sqlite_checkout(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: Any) -> None:
    if _CONFIGURED not in record.info:  # kept for the DBAPI connection's life
        _on_sqlite_connect(dbapi_connection, record)


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
    """Where every call's transaction runs, and where database errors are translated.

    A store opened from a URL (``owned``) runs plans on its own drivers: SQLite on threads
    it owns, PostgreSQL on an asyncpg pool on an event loop of its own, in a thread it owns, so
    it serves any thread and any event loop. Its SQLAlchemy engine (no pool) only migrates and
    checks the schema; the store's own connections connect as it does (its URL and
    ``connect_args``). A caller's engine runs plans on connections borrowed from its pool.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        owned: bool = False,
        pool_size: int = 10,
        watch_interval: float = 0.05,
        connect_args: dict[str, Any] | None = None,
    ) -> None:
        prepare_engine(engine)
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.trace: Callable[[Stmt], None] | None = None
        self._closed = False
        self.any_loop = owned
        # The process whose threads serve an owned store's calls: a process forked from it has
        # none of them (see ``_forked``).
        self._pid = os.getpid() if owned else None
        self._sqlite: SQLiteDriver | None = None
        self._postgres: PostgresDriver | None = None
        self._engine_driver: EngineDriver | None = None
        if owned and self.is_sqlite:
            path = sqlite_path(engine.url)
            memory = in_memory(engine.url)
            self._sqlite = SQLiteDriver(path, memory=memory)
            self.changes = ChangeHub(watch_interval, sqlite_path=None if memory else path, local_only=memory)
        elif owned:
            # Imported here: asyncpg is only installed with the ``postgres`` extra.
            from chatmemory import _postgres_driver

            postgres = self._postgres = _postgres_driver.PostgresDriver(
                engine.url, max_size=pool_size, connect_args=connect_args
            )
            self.changes = ChangeHub(
                watch_interval,
                listen=lambda wake: postgres.listen(_sql.CHANGE_CHANNEL, wake),
                listening=lambda: postgres.listening,
            )
        else:
            # A caller's engine: watchers poll, since its connections are the caller's to hold.
            self._engine_driver = EngineDriver(engine)
            self.changes = ChangeHub(watch_interval)
        # Plans still running after their caller was cancelled; close() waits for them.
        self._background: set[asyncio.Future[Any]] = set()
        # The close's work, begun by the first close and done once; every close waits for it.
        self._closing_lock = threading.Lock()
        self._shutdown: concurrent.futures.Future[None] | None = None
        # Calls in ``transaction`` (imports, purges, migrations); the close waits for them.
        self._transactions = 0
        self._transactions_over = threading.Condition(self._closing_lock)

    def set_trace(self, trace: Callable[[Stmt], None] | None) -> None:
        """Call ``trace`` with every statement sent to the database (for structural tests)."""
        self.trace = trace
        for driver in (self._sqlite, self._postgres, self._engine_driver):
            if driver is not None:
                driver.trace = trace

    async def run(
        self,
        plan: Plan[T],
        *,
        write: bool = False,
        group: Hashable = None,
        rows: int | None = None,
        fallback: Callable[[], Plan[T]] | None = None,
    ) -> T:
        """Run ``plan`` as one transaction; commits when it returns, rolls back when it raises.

        ``rows`` bounds the rows the plan reads or writes, where its caller knows a bound. A
        plan of at most ``QUICK_ROWS`` does less work than a trip to another thread: on SQLite
        it runs on the caller's thread when it can start at once (see ``_sqlite_driver``),
        letting the event loop run its other work at least every millisecond (see
        ``_let_the_loop_run``). A plan that reads rows it cannot
        bound (every history or message of a conversation, say) is not small, whatever it
        returns.

        A read on PostgreSQL runs its statements without ``BEGIN``/``COMMIT``, which under
        READ COMMITTED reads the same (each statement has its own snapshot either way), unless
        its first statement asks for one snapshot for all (``Stmt.snapshot``).

        ``fallback`` makes the plan that runs in ``plan``'s place when a key ``plan`` inserted
        without looking it up was stored already (``Stmt.unread_keys``; ``plan`` wrote nothing).
        It runs as part of the same call, on its connection: in its place among queued writes (in
        its savepoint), before a close that began meanwhile ends the call, and to its end for a
        caller cancelled meanwhile, as any started write does.

        A cancelled caller never leaves a transaction half done: a plan that has started runs
        to its commit or rollback, and a write is awaited to that outcome before the
        cancellation goes on.

        Writes of one ``group`` (appends to one history) may share a transaction with others of
        it that queued meanwhile, as every write does on SQLite (group commit).

        Raises:
            StorageError: the database failed, or the store is closed; nothing was committed.
        """
        quick = rows is not None and rows <= QUICK_ROWS
        if not write:
            return await self._run(plan, write=False, quick=quick)
        token, sqlite = self.changes.token, self.is_sqlite
        again = None if fallback is None else (lambda: logged(fallback(), token, sqlite=sqlite))
        try:
            result, changed = await self._run(
                logged(plan, token, sqlite=sqlite), write=True, group=group, quick=quick, fallback=again
            )
        except asyncio.CancelledError:
            self.changes.notify()  # the write may have committed before its caller was cancelled
            raise
        if changed:
            self.changes.notify(changed)
        return result  # type: ignore[no-any-return]

    async def _run(
        self,
        plan: Plan[T],
        *,
        write: bool,
        group: Hashable = None,
        quick: bool = False,
        fallback: Callable[[], Plan[T]] | None = None,
    ) -> T:
        """Run ``plan``; ``fallback`` (see ``run``) runs in its place in the same call, on the
        same connection and in its place among queued writes (SQLite never needs it)."""
        if self._closed or self._forked():
            plan.close()
            raise StorageError(_FORKED if self._forked() else "the store is closed")
        try:
            if self._sqlite is not None or self._postgres is not None:
                if quick and self._sqlite is not None:
                    try:
                        await _let_the_loop_run()
                    except BaseException:
                        plan.close()  # cancelled before it started
                        raise
                    try:
                        done = self._sqlite.run_here(plan, write=write)
                    except Closed:  # as a read that ran long was handed on
                        raise StorageError("the store is closed") from None
                    if isinstance(done, tuple):
                        return done[0]
                    if done is not None:  # a read that ran long, gone on on a reader thread
                        return await _outcome(done, False, unstarted=True)
                try:
                    if self._sqlite is not None:
                        submitted = self._sqlite.submit(plan, write=write)
                    else:
                        assert self._postgres is not None
                        submitted = self._postgres.submit(plan, write=write, group=group, fallback=fallback)
                except RuntimeError:
                    plan.close()
                    raise StorageError("the store is closed") from None
                # Queued for the writer (SQLite) or a connection (PostgreSQL): not started yet.
                return await _outcome(submitted, write, unstarted=True)
            assert self._engine_driver is not None
            task = asyncio.ensure_future(self._engine_driver.run(plan, write=write, fallback=fallback))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return await _finish(task, write)
        except ChatMemoryError:
            raise
        except _driver_errors() as exc:
            raise _storage_error(exc) from exc

    @contextlib.asynccontextmanager
    async def transaction(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """A SQLAlchemy transaction on the engine (schema changes, import and purge).

        Raises:
            StorageError: the database failed; nothing was committed.
        """
        with self._closing_lock:
            if self._closed or self._forked():
                raise StorageError(_FORKED if self._forked() else "the store is closed")
            self._transactions += 1
        release: threading.Event | None = None
        try:
            if self._engine_driver is not None:
                self._engine_driver.check_loop()
            if self._sqlite is not None and self._sqlite.memory:
                # A shared in-memory database locks tables, and a connection refused such a lock
                # fails at once (no busy timeout): the store's own connection waits meanwhile.
                try:
                    idle, release = self._sqlite.hold()
                except RuntimeError:
                    raise StorageError("the store is closed") from None
                await asyncio.wrap_future(idle)
            async with one_at_a_time(self.engine), self.engine.connect() as conn:
                if write and self.is_sqlite:
                    await conn.execution_options(**{_WRITE: True})
                async with conn.begin():
                    yield conn
            if write:
                self.changes.notify()
        except ChatMemoryError:
            raise
        except _driver_errors() as exc:
            raise _storage_error(exc) from exc
        finally:
            if release is not None:
                release.set()
            with self._closing_lock:
                self._transactions -= 1
                if not self._transactions:
                    self._transactions_over.notify_all()

    async def write_apart(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` run in a write ``transaction`` on a task of its own (imports and purges).

        The task is never cancelled, as a plan never is: the driver is not interrupted in the
        middle of a statement (asyncpg may then never return), and a cancelled caller waits for
        the commit or rollback before its cancellation goes on, as with any write ``run`` does.
        On PostgreSQL it waits for a lock held elsewhere no longer than the store's own calls
        (``LOCK_TIMEOUT_MS``), so neither it nor that caller waits for good.

        Raises:
            StorageError: the database failed; nothing was committed.
        """

        async def body() -> T:
            async with self.transaction(write=True) as conn:
                if not self.is_sqlite:  # waits for locks as long as the store's own calls do
                    from chatmemory._postgres_driver import LOCK_TIMEOUT_MS

                    await conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}")
                return await work(conn)

        task = asyncio.ensure_future(body())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return await _finish(task, True)

    async def close(self) -> None:
        """Wait for running calls, then close the connections this store opened. Idempotent, and
        whole however it is called: the first close begins the work on a thread of its own, and
        every close, a later one or one from another event loop, returns once that work is done,
        even after an earlier close was cancelled midway."""
        with self._closing_lock:
            self._closed = True
            shutdown = self._shutdown
            if shutdown is None and self._forked():
                # Forked: the connections are the parent's, still in its use. Closing them here
                # would end the parent's PostgreSQL sessions; they are kept unclosed instead.
                _INHERITED.append(self)
                shutdown = self._shutdown = concurrent.futures.Future()
                shutdown.set_result(None)
            if shutdown is None:
                shutdown = self._shutdown = concurrent.futures.Future()
                threading.Thread(target=self._shut, args=(shutdown,), name="chatmemory-close").start()
        # Copied at once (other threads' calls add to the set meanwhile): this loop's only, since
        # a task of another loop cannot be awaited here; those run on to their own end.
        pending = [t for t in list(self._background) if t.get_loop() is asyncio.get_running_loop()]
        if pending:
            await asyncio.wait(pending, timeout=_CLOSE_WAITS_AT_MOST)
        # Shielded: a cancelled close leaves the work going on, for the next close to wait for.
        await asyncio.shield(asyncio.wrap_future(shutdown))

    def _forked(self) -> bool:
        """Whether this process was forked from the one that opened the store (a preloading
        server's worker, say): the store's threads, which serve its calls, are not in this
        process, so its calls are refused (``_FORKED``) where they would wait for good."""
        return self._pid is not None and self._pid != os.getpid()

    def _shut(self, done: concurrent.futures.Future[None]) -> None:
        """The close's work, on a thread of its own: stop the watchers, wait for the calls on the
        engine (``transaction``), then close the drivers."""
        try:
            self.changes.close()
            with self._closing_lock:
                self._transactions_over.wait_for(lambda: not self._transactions, _CLOSE_WAITS_AT_MOST)
            for driver in (self._sqlite, self._postgres):
                if driver is not None:
                    driver.close()
        except BaseException as exc:  # answered to every close
            done.set_exception(exc)
        else:
            done.set_result(None)


_FORKED = (
    "this store was opened in the process this one was forked from, whose threads serve its "
    "calls: open a store in this process (after the fork) instead"
)
# Stores a forked process closed: kept, so that their connections, the parent's, are never closed here.
_INHERITED: list[Database] = []
# How long a close waits for calls still running on the engine, or for a caller's engine's
# plans whose callers were cancelled, before it goes on closing.
_CLOSE_WAITS_AT_MOST = 60.0
# When calls running on this thread last let its event loop run its other work.
_yielded = threading.local()
# A task whose calls run on its thread one after another lets the loop run this often.
_HOLD_THE_LOOP_AT_MOST = 0.001


async def _let_the_loop_run() -> None:
    """Let the event loop run its other work, as awaiting another thread does, if calls run on
    this thread have held it for ``_HOLD_THE_LOOP_AT_MOST`` seconds: a task calling the store
    in a loop (polling for what another task writes) never holds the loop up, and a timeout
    around it fires. Every time would cost a turn of the loop per call."""
    now = time.monotonic()
    if now - getattr(_yielded, "at", 0.0) >= _HOLD_THE_LOOP_AT_MOST:
        await asyncio.sleep(0)
        _yielded.at = time.monotonic()


def owned_engine(url: str | URL | None, options: dict[str, Any]) -> tuple[AsyncEngine, int]:
    """The engine of a store opened from a URL, and the size of its asyncpg pools.

    The engine keeps no pool: it only migrates, and a pooled async connection would tie the
    store to the event loop that opened it. Pool options size the store's own pools instead.
    An in-memory SQLite database becomes one named, shared in-memory database, so the engine
    that migrates it and the store's own connection see the same one.
    """
    options = dict(options)
    size = int(options.pop("pool_size", 10) or 10) + int(options.pop("max_overflow", 0) or 0)
    for name in _POOL_OPTIONS:
        options.pop(name, None)
    resolved = resolve_url(url)
    if in_memory(resolved):
        database = resolved.database or ""
        named = database if database.startswith("file:") and database != "file::memory:" else None
        resolved = resolved.set(
            database=named or f"file:chatmemory-{uuid.uuid4().hex}",
            query={**resolved.query, "mode": "memory", "cache": "shared", "uri": "true"},
        )
    return create_engine(resolved, poolclass=NullPool, **options), size


def _absolute(database: str) -> str:
    """A SQLite database's path, or ``file:`` URI, made absolute (``~`` expanded in a path)."""
    if not database.startswith("file:"):
        return os.path.abspath(os.path.expanduser(database))
    parts = urllib.parse.urlsplit(database)
    if parts.netloc or parts.path.startswith("/"):
        return database
    return f"file:{os.path.abspath(parts.path)}"


def in_memory(url: URL) -> bool:
    """Whether a SQLite URL names an in-memory database (``file::memory:`` is the URI of one, and
    SQLite's ``memdb`` VFS keeps its databases in memory)."""
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:", "file::memory:")
        or url.query.get("mode") == "memory"
        or url.query.get("vfs") == "memdb"
    )


def missing_file(url: str | URL | None) -> bool:
    """Whether ``url`` names a SQLite file that does not exist (yet): an empty database, which a
    check can tell without connecting, and so without creating the file."""
    try:
        parsed = make_url(url if url is not None else default_url())
    except ArgumentError:
        return False  # refused when opened
    if parsed.get_backend_name() != "sqlite" or in_memory(parsed):
        return False
    return not os.path.exists(_file_of(_absolute(parsed.database or "")))


def sqlite_path(url: URL) -> str:
    """What ``sqlite3.connect`` opens for a SQLite URL: its file, or its URI with the URI's
    parameters (SQLAlchemy passes every query parameter but its own into the URI)."""
    database = url.database or ":memory:"
    if url.query.get("uri") != "true":
        return database
    query = "&".join(f"{k}={v}" for k, v in url.query.items() if k not in _SQLALCHEMY_SQLITE_PARAMS)
    return f"{database}?{query}" if query else database


async def _outcome(submitted: concurrent.futures.Future[T], write: bool, *, unstarted: bool) -> T:
    """Await a plan running on the store's own thread.

    A cancelled caller withdraws the plan only if it has not started (``unstarted``: the
    future is still queued); a started plan always runs to its commit or rollback, and a
    cancelled writer waits for that before its cancellation goes on.
    """
    waiting = asyncio.wrap_future(submitted)
    # A caller that stopped waiting has its error, if any, dropped here rather than logged.
    waiting.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        return await asyncio.shield(waiting)
    except asyncio.CancelledError:
        if (unstarted and submitted.cancel()) or not write:
            raise
        await settle(waiting)
        raise


async def _finish(task: asyncio.Future[T], write: bool) -> T:
    """Await a plan's task. It is never cancelled itself, so its connection always goes back to
    the pool with the transaction ended; a cancelled caller of a write waits for that end."""
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if write:
            await settle(task)
        raise


async def settle(future: asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done, whatever cancellations arrive meanwhile, and whatever it
    ends in: a cancelled caller's cancellation is what goes on, never the work's own error."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({future})
    if not future.cancelled():
        future.exception()  # retrieved


def refused_as_read_only(exc: StorageError) -> bool:
    """Whether ``exc`` is a write refused because the database is read-only here: a SQLite file
    opened read-only (or without write access), a PostgreSQL standby or read-only transaction."""
    for cause in _causes(exc):
        if getattr(cause, "sqlstate", None) == "25006":  # read_only_sql_transaction
            return True
        if isinstance(cause, sqlite3.Error) and getattr(cause, "sqlite_errorcode", 0) & 0xFF == 8:
            return True  # SQLITE_READONLY, the primary code of every write refused so
    return False


def purged_meanwhile(exc: StorageError) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a search index row whose message was removed after
    the statement writing it had found the message (a purge that committed meanwhile)."""
    return any(
        getattr(cause, "sqlstate", None) == "23503"
        and getattr(cause, "table_name", None) == "chat_messages_search"
        for cause in _causes(exc)
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions ``exc`` was raised from, nearest first."""
    cause = exc.__cause__
    while cause is not None:
        yield cause
        cause = cause.__cause__


def _storage_error(exc: BaseException) -> StorageError:
    """What a driver's error is to the caller: ``CorruptDataError`` for stored text the
    ``sqlite3`` module cannot decode (bytes that are not UTF-8, written by another program),
    else ``StorageError``."""
    if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("Could not decode to UTF-8"):
        return CorruptDataError(f"a stored value could not be read ({exc}); it was not written by chatmemory")
    return StorageError(_database_error(exc))


def _database_error(exc: BaseException) -> str:
    """``database error: <type>: <the first line of its text>``, or without the text when it
    has none (a driver's ``TimeoutError()``, say)."""
    text = str(getattr(exc, "orig", None) or exc)
    line = next((line.strip()[:300] for line in text.splitlines() if line.strip()), "")
    kind = type(exc).__name__
    return f"database error: {kind}: {line}" if line else f"database error: {kind}"
