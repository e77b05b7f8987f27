"""Plans on PostgreSQL: asyncpg directly, one pool, prepared statements.

asyncpg prepares and caches every statement per connection, so a plan's statements are
parsed once per connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import URL

from chatmemory._plan import Plan, Stmt, collector_paused, postgres_value

T = TypeVar("T")


def connect_options(url: URL) -> dict[str, Any]:
    """asyncpg's connection arguments for a SQLAlchemy URL."""
    options: dict[str, Any] = {
        "user": url.username,
        "password": url.password,
        "host": url.query.get("host") or url.host,
        "port": url.port,
        "database": url.database,
    }
    return {k: v for k, v in options.items() if v is not None}


async def run_on(
    connection: asyncpg.Connection, plan: Plan[T], trace: Callable[[Stmt], None] | None, *, write: bool
) -> T:
    """Run ``plan`` on ``connection``: a write in one transaction; a read statement by statement,
    each its own transaction, which under READ COMMITTED reads what it would inside one (each
    statement takes its own snapshot there too) without the round trips of BEGIN and COMMIT."""
    if write:
        async with connection.transaction():
            return await _drive(connection, plan, trace)
    return await _drive(connection, plan, trace)


async def _drive(connection: asyncpg.Connection, plan: Plan[T], trace: Callable[[Stmt], None] | None) -> T:
    try:
        stmt = next(plan)
        while True:
            if trace is not None:
                trace(stmt)
            stmt = plan.send(await execute(connection, stmt))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        plan.close()


async def execute(connection: asyncpg.Connection, stmt: Stmt) -> Any:
    sql = stmt.sql
    if not sql.postgres:
        return 0 if stmt.count else []  # nothing to do on this backend
    if stmt.many:
        assert isinstance(stmt.params, list)
        await connection.executemany(
            sql.postgres, [[postgres_value(p[name]) for name in sql.names] for p in stmt.params]
        )
        return []
    assert isinstance(stmt.params, dict)
    args = [postgres_value(stmt.params[name]) for name in sql.names]
    if stmt.count:
        status = await connection.execute(sql.postgres, *args)
        return int(status.rsplit(" ", 1)[-1])
    if stmt.bulk:  # asyncpg's records and ids are objects the collector tracks
        with collector_paused():
            return await connection.fetch(sql.postgres, *args)
    return await connection.fetch(sql.postgres, *args)


async def _session_unchanged(connection: asyncpg.Connection) -> None:
    """A connection going back to the pool needs no reset query: plans set no session settings,
    take no session locks, listen to nothing and leave no cursor open, and asyncpg still rolls
    back a transaction left open. The default reset would cost a round trip per call."""


class PostgresDriver:
    """Runs plans on an asyncpg pool that lives on an event loop of its own, in a thread it owns.

    asyncpg connections belong to the loop that opened them; keeping them on the store's own
    loop lets any thread and any event loop call (even one made by ``asyncio.run`` for a single
    call), and no caller's loop can block the pool.
    """

    def __init__(self, url: URL, *, max_size: int = 10, trace: Callable[[Stmt], None] | None = None) -> None:
        self._options = connect_options(url)
        self._max_size = max_size
        self.trace = trace
        self._pool: asyncpg.Pool | None = None
        self._listener: concurrent.futures.Future[None] | None = None
        self._listening_task: asyncio.Task[None] | None = None
        self._listen_lock = threading.Lock()
        self.listening = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="chatmemory-postgres", daemon=True
        )
        self._thread.start()

    def submit(self, plan: Plan[T], *, write: bool) -> concurrent.futures.Future[T]:
        """Start the plan on the store's loop (see ``run_on``).

        Raises:
            RuntimeError: the driver is closed.
        """
        return asyncio.run_coroutine_threadsafe(self._run(plan, write), self._loop)

    async def _run(self, plan: Plan[T], write: bool) -> T:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                min_size=0,
                max_size=self._max_size,
                statement_cache_size=256,
                reset=_session_unchanged,
                **self._options,
            )
        async with self._pool.acquire() as connection:
            return await run_on(connection, plan, self.trace, write=write)

    def listen(self, channel: str, wake: Callable[[str], None]) -> None:
        """Keep one connection listening on ``channel``, calling ``wake`` with each notification's
        payload, and with ``""`` whenever it (re)connects, since notifications sent meanwhile are
        lost (idempotent)."""
        with self._listen_lock:
            if self._listener is None:
                with contextlib.suppress(RuntimeError):  # closed: nothing to listen for
                    self._listener = asyncio.run_coroutine_threadsafe(self._listen(channel, wake), self._loop)

    async def _listen(self, channel: str, wake: Callable[[str], None]) -> None:
        self._listening_task = asyncio.current_task()
        while True:
            try:
                connection = await asyncpg.connect(**self._options)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(1)
                continue
            lost = asyncio.Event()
            try:
                connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
                await connection.add_listener(channel, lambda *args: wake(args[-1]))
                self.listening = True
                wake("")
                await lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            finally:
                self.listening = False
                connection.terminate()

    async def _close_pool(self) -> None:
        if self._listening_task is not None:
            self._listening_task.cancel()
            await asyncio.gather(self._listening_task, return_exceptions=True)
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout=10)
            except TimeoutError:
                self._pool.terminate()

    def close(self) -> None:
        """Close the pool and stop the loop (blocking: run it on a thread)."""
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._close_pool(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()
