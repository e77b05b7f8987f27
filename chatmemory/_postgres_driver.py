"""Plans on PostgreSQL: asyncpg directly, a pool per event loop, prepared statements.

asyncpg connections belong to the event loop that opened them, so each loop that calls
gets its own pool (created on first use, closed by ``close``). asyncpg prepares and caches
every statement per connection, so a plan's statements are parsed once per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import URL

from chatmemory._plan import Plan, Stmt, postgres_value

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


async def run_on(connection: asyncpg.Connection, plan: Plan[T], trace: Callable[[Stmt], None] | None) -> T:
    """Run ``plan`` in one transaction on ``connection``."""
    async with connection.transaction():
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
    return await connection.fetch(sql.postgres, *args)


class PostgresDriver:
    """Runs plans on asyncpg pools, one per event loop."""

    def __init__(self, url: URL, *, max_size: int = 10, trace: Callable[[Stmt], None] | None = None) -> None:
        self._options = connect_options(url)
        self._max_size = max_size
        self.trace = trace
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[asyncpg.Pool]] = (
            weakref.WeakKeyDictionary()
        )

    async def _pool(self) -> asyncpg.Pool:
        loop = asyncio.get_running_loop()
        future = self._pools.get(loop)
        if future is None:
            future = loop.create_future()
            self._pools[loop] = future
            try:
                pool = await asyncpg.create_pool(
                    min_size=0, max_size=self._max_size, statement_cache_size=256, **self._options
                )
            except Exception as exc:
                del self._pools[loop]
                future.set_exception(exc)
                future.exception()  # retrieved: the next caller tries again
                raise
            except BaseException:
                del self._pools[loop]
                future.cancel()
                raise
            future.set_result(pool)
        return await asyncio.shield(future)

    async def run(self, plan: Plan[T]) -> T:
        pool = await self._pool()
        async with pool.acquire() as connection:
            return await run_on(connection, plan, self.trace)

    async def close(self) -> None:
        """Close this loop's pool; terminate pools of other loops (they cannot be awaited here)."""
        loop = asyncio.get_running_loop()
        pools = list(self._pools.items())
        self._pools.clear()
        for owner, future in pools:
            if not future.done() or future.exception() is not None:
                continue
            pool = future.result()
            if owner is loop:
                try:
                    await asyncio.wait_for(pool.close(), timeout=10)
                except TimeoutError:
                    pool.terminate()
            else:
                with contextlib.suppress(RuntimeError):
                    pool.terminate()
