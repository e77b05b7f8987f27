"""A throwaway PostgreSQL server for the test suite, and databases on it.

``CHATMEMORY_TEST_POSTGRES_URL`` points the suite at an existing server; otherwise the
``pgserver`` wheel's PostgreSQL is started in a temporary directory (it runs the server
as an unprivileged user when the suite runs as root, which PostgreSQL requires).

The suite's own server keeps its files in memory (``/dev/shm`` where there is one) and does
not flush them to disk: it lives only as long as the run, and creating and dropping one
database per test costs milliseconds there instead of a quarter of a second on a busy disk.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
import warnings
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import asyncpg
from sqlalchemy import make_url

ENV = "CHATMEMORY_TEST_POSTGRES_URL"
T = TypeVar("T")
# Durability settings a server that is deleted at the end of the run has no use for.
_THROWAWAY_SETTINGS = ("fsync = off", "synchronous_commit = off", "full_page_writes = off")


def _scratch_directory() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _patient(pg_ctl: Callable[..., str]) -> Callable[..., str]:
    """``pg_ctl`` as pgserver runs it, with at least two minutes for each command: pgserver
    gives ``pg_ctl start`` 10 s, which a busy machine starting a server per test worker at
    once can exceed (``pg_ctl`` itself waits up to 60 s for the server)."""

    def run(args: list[str], **kwargs: Any) -> str:
        if "timeout" in kwargs:
            kwargs["timeout"] = max(kwargs["timeout"], 120)
        return pg_ctl(args, **kwargs)

    return run


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a ``postgresql://`` URL of a server that accepts CREATE DATABASE."""
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    with warnings.catch_warnings():
        # pgserver warns about its environment (no XDG_RUNTIME_DIR, deprecated APIs); none matters here.
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver import postgres_server as pgserver_module

        workdir = tempfile.mkdtemp(prefix="chatmemory-pg-", dir=_scratch_directory())
        os.chmod(workdir, 0o755)
        with mock.patch.object(pgserver_module, "pg_ctl", _patient(pgserver_module.pg_ctl)):
            server = pgserver.get_server(workdir, cleanup_mode="delete")
    try:
        settings = "".join(f"ALTER SYSTEM SET {setting};\n" for setting in _THROWAWAY_SETTINGS)
        server.psql(f"{settings}SELECT pg_reload_conf();\n")
        yield server.get_uri()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


async def _connect(server_url: str) -> asyncpg.Connection:
    url = make_url(server_url)
    return await asyncpg.connect(
        user=url.username,
        password=url.password or None,
        host=url.query.get("host") or url.host,
        port=url.port,
        database=url.database,
    )


async def _execute(url: str, statement: str) -> None:
    """Run one statement on a connection of its own to the database at ``url``."""
    conn = await _connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(server_url: str, template: str | None = None) -> str:
    """The URL of a new database on the server: empty, or a copy of the database ``template``
    (which nobody may be connected to)."""
    name = f"cm_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    await _execute(server_url, f'CREATE DATABASE "{name}"{copy}')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, database_url: str) -> None:
    """Drop the database at ``database_url``, ending any connection still open to it."""
    name = make_url(database_url).database
    await _execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def set_statement_timeout(database_url: str, milliseconds: int) -> None:
    """Give the database at ``database_url`` a ``statement_timeout``, as a managed service sets
    one for an application: the connections opened from then on have it."""
    name = make_url(database_url).database
    await _execute(database_url, f'ALTER DATABASE "{name}" SET statement_timeout = {int(milliseconds)}')


async def analyze(database_url: str) -> None:
    """Gather the planner's statistics of the database at ``database_url``, as autovacuum does a
    while after a bulk load: until then PostgreSQL may plan a query on a table just filled for
    far fewer rows than it holds."""
    await _execute(database_url, "ANALYZE")


async def statement_timeout(memory: Any) -> str:
    """The ``statement_timeout`` the store's connections run under, as PostgreSQL shows it."""
    async with memory.engine.connect() as conn:
        return str((await conn.exec_driver_sql("SHOW statement_timeout")).scalar_one())


async def append_all(scope: Any, history_id: Any, messages: Sequence[Any], batch: int) -> None:
    """Append ``messages`` to the history, ``batch`` to a call: more than one call takes."""
    for start in range(0, len(messages), batch):
        await scope.append_messages(history_id, messages[start : start + batch])


async def until_waiting_for_a_lock(database_url: str) -> None:
    """Until a session of the database at ``database_url`` waits for a lock (at most 30 s)."""
    conn = await _connect(database_url)
    try:
        for _ in range(3000):
            if await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("no session waits for a lock")
    finally:
        await conn.close()


async def end_other_connections(database_url: str) -> set[int]:
    """End every other connection to the database at ``database_url`` from the server's side
    (``pg_terminate_backend``); answers their backends' process ids. Others than a store's
    may be among them: a backend whose client closed it and that has not exited yet, or an
    autovacuum worker visiting the database."""
    conn = await _connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            make_url(database_url).database,
        )
        return {row["pid"] for row in rows}
    finally:
        await conn.close()


def store_backends(memory: Any) -> set[int]:
    """The backends' process ids of the connections the store's PostgreSQL pool holds."""
    pool = memory._db._postgres._pool
    return {holder._con.get_server_pid() for holder in pool._holders if holder._con is not None}


def on_store_loop(memory: Any, call: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """``call`` run on the event loop of the store's PostgreSQL connections, awaitable from the
    caller's loop (a connection may be touched only from its own loop)."""
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, memory._db._postgres._loop))


async def log_queries(memory: Any) -> list[str]:
    """Every query the store's pooled connections send from now on, in order (a structural
    test's view of the round trips a call makes)."""
    driver = memory._db._postgres
    assert driver is not None and driver._pool is not None
    queries: list[str] = []

    async def install() -> None:
        for holder in driver._pool._holders:
            if holder._con is not None:
                holder._con.add_query_logger(lambda record: queries.append(record.query))

    await on_store_loop(memory, install())
    return queries


async def pool_idle(memory: Any) -> None:
    """Until every pooled connection of the store is idle (back in its pool, or kept by the
    driver for its next call), and its loop has run what finishing their calls scheduled (query
    loggers): at most 30 s, the machine may be slow."""
    driver = memory._db._postgres
    assert driver is not None and driver._pool is not None
    pool = driver._pool

    async def idle() -> bool:
        return bool(pool._queue.qsize() + len(driver._idle) == len(pool._holders))

    for _ in range(3000):
        if await on_store_loop(memory, idle()):
            # A logger the last release raced with runs before a call scheduled after it.
            await on_store_loop(memory, asyncio.sleep(0))
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the store's connections never all went back to its pool")
