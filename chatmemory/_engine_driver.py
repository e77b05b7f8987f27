"""Plans on an engine the caller owns (``ChatMemory(engine)``).

Each call borrows one connection from the engine's pool and runs its plan on the driver
connection underneath: asyncpg as in ``_postgres_driver`` (the same cost), aiosqlite one
statement per trip to aiosqlite's thread (about a hop per statement, where a store opened
from a URL makes one per call). The engine's pool and its event loop stay the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, cast

import aiosqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool, SingletonThreadPool, StaticPool

from chatmemory._plan import Plan, Stmt, positional, sqlite_value
from chatmemory.errors import StorageError

T = TypeVar("T")

# Pools that hand every checkout the same connection (SQLAlchemy's choice for an in-memory
# SQLite engine): calls on one of them take turns, each holding it from checkout to return.
_ONE_CONNECTION = (StaticPool, SingletonThreadPool)
_Turns = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
_turns: weakref.WeakKeyDictionary[Pool, _Turns] = weakref.WeakKeyDictionary()


def one_at_a_time(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[Any]:
    """Held around each use of ``engine``'s connections by the store, when its pool shares one
    connection among all checkouts: two calls on it at once would otherwise begin a transaction
    inside the other's, and one's rollback (or the pool's reset on return) undo the other's
    statements, some of which would commit anyway. Shared by every store on the engine; one per
    event loop (an asyncio lock serves one), so an engine used by one loop after another (a test
    suite's) works."""
    pool = engine.sync_engine.pool
    if not isinstance(pool, _ONE_CONNECTION):
        return contextlib.nullcontext()
    loops = _turns.get(pool)
    if loops is None:
        loops = _turns[pool] = weakref.WeakKeyDictionary()
    loop = asyncio.get_running_loop()
    turn = loops.get(loop)
    if turn is None:
        turn = loops[loop] = asyncio.Lock()
    return turn


class EngineDriver:
    """Runs plans on connections borrowed from a SQLAlchemy async engine."""

    def __init__(self, engine: AsyncEngine, *, trace: Callable[[Stmt], None] | None = None) -> None:
        self.engine = engine
        self.trace = trace
        self._loop: asyncio.AbstractEventLoop | None = None

    def check_loop(self) -> None:
        """Refuse a call from an event loop other than the one the engine's pooled asyncpg
        connections belong to, before it touches one (it would fail halfway and leave the
        connection unusable). Once the pool holds no connection (disposed, or none opened yet),
        any loop may take the engine over.

        Raises:
            StorageError: the engine's connections belong to another event loop.
        """
        if self.engine.dialect.driver != "asyncpg":
            return  # aiosqlite answers each call on the loop that made it
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            pool = self.engine.pool
            held = getattr(pool, "checkedin", _none)() + getattr(pool, "checkedout", _none)()
            if held:
                raise StorageError(
                    "this engine's asyncpg connections belong to another event loop: call "
                    "ChatMemory(engine) from that loop, or open the store with ChatMemory.open(url) "
                    "to call it from any thread and event loop"
                )
        self._loop = loop

    async def run(self, plan: Plan[T], *, write: bool, fallback: Callable[[], Plan[T]] | None = None) -> T:
        self.check_loop()
        async with one_at_a_time(self.engine), self.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            if isinstance(driver, aiosqlite.Connection):
                return await self._run_aiosqlite(driver, plan, write)
            # Any other engine is PostgreSQL on asyncpg, the optional driver imported on use.
            from chatmemory._postgres_driver import run_on

            return await run_on(driver, plan, self.trace, write=write, fallback=fallback)

    async def _run_aiosqlite(self, connection: aiosqlite.Connection, plan: Plan[T], write: bool) -> T:
        await connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            try:
                stmt = next(plan)
                while True:
                    if self.trace is not None:
                        self.trace(stmt)
                    stmt = plan.send(await _execute(connection, stmt))
            except StopIteration as done:
                result: T = done.value
            await connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                await connection.execute("ROLLBACK")
            raise
        finally:
            plan.close()
        return result


def _none() -> int:
    return 0


async def _execute(connection: aiosqlite.Connection, stmt: Stmt) -> Any:
    def params(values: dict[str, Any]) -> dict[str, Any]:
        return {name: sqlite_value(value) for name, value in values.items()}

    if not stmt.sql.sqlite:
        return 0 if stmt.count else []  # nothing to do on this backend
    if stmt.many:
        assert isinstance(stmt.params, list)
        if positional(stmt.params):
            await connection.executemany(stmt.sql.sqlite_numbered, stmt.params)
        else:
            rows = cast(list[dict[str, Any]], stmt.params)
            await connection.executemany(stmt.sql.sqlite, [params(p) for p in rows])
        return []
    assert isinstance(stmt.params, dict)
    async with connection.execute(stmt.sql.sqlite, params(stmt.params)) as cursor:
        return cursor.rowcount if stmt.count else await cursor.fetchall()
