"""Plans on an engine the caller owns (``ChatMemory(engine)``).

Each call borrows one connection from the engine's pool and runs its plan on the driver
connection underneath: asyncpg as in ``_postgres_driver`` (the same cost), aiosqlite one
statement per trip to aiosqlite's thread (about a hop per statement, where a store opened
from a URL makes one per call). The engine's pool and its event loop stay the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from chatmemory._plan import Plan, Stmt, sqlite_value

T = TypeVar("T")


class EngineDriver:
    """Runs plans on connections borrowed from a SQLAlchemy async engine."""

    def __init__(self, engine: AsyncEngine, *, trace: Callable[[Stmt], None] | None = None) -> None:
        self.engine = engine
        self.trace = trace

    async def run(self, plan: Plan[T], *, write: bool) -> T:
        async with self.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            if isinstance(driver, aiosqlite.Connection):
                return await self._run_aiosqlite(driver, plan, write)
            # Any other engine is PostgreSQL on asyncpg, the optional driver imported on use.
            from chatmemory._postgres_driver import run_on

            return await run_on(driver, plan, self.trace, write=write)

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


async def _execute(connection: aiosqlite.Connection, stmt: Stmt) -> Any:
    def params(values: dict[str, Any]) -> dict[str, Any]:
        return {name: sqlite_value(value) for name, value in values.items()}

    if not stmt.sql.sqlite:
        return 0 if stmt.count else []  # nothing to do on this backend
    if stmt.many:
        assert isinstance(stmt.params, list)
        await connection.executemany(stmt.sql.sqlite, [params(p) for p in stmt.params])
        return []
    assert isinstance(stmt.params, dict)
    async with connection.execute(stmt.sql.sqlite, params(stmt.params)) as cursor:
        return cursor.rowcount if stmt.count else await cursor.fetchall()
