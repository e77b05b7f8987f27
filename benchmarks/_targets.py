"""Where systems store data: a SQLite file in WAL mode, or a database on a real PostgreSQL server."""

from __future__ import annotations

import contextlib
import importlib
import os
import sqlite3
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

POSTGRES_ENV = "CHATMEMORY_BENCH_POSTGRES_URL"
# chatmemory's own settings; the raw drivers use them too. Peers get WAL + NORMAL + busy
# timeout (they keep their own foreign-key choice, which is part of what they do or skip).
SQLITE_PRAGMAS = ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON")
SQLITE_PEER_PRAGMAS = ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = NORMAL")


@dataclass(frozen=True)
class Store:
    """One empty (or seeded) database, addressed the ways different drivers want it."""

    backend: str
    url: str
    path: Path | None = None

    @property
    def async_url(self) -> str:
        """The SQLAlchemy URL with an async driver (aiosqlite or asyncpg)."""
        driver = "sqlite+aiosqlite" if self.backend == "sqlite" else "postgresql+asyncpg"
        return make_url(self.url).set(drivername=driver).render_as_string(hide_password=False)

    def asyncpg_args(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect``."""
        url = make_url(self.url)
        return {
            "user": url.username,
            "password": url.password or None,
            "host": url.query.get("host") or url.host,
            "port": url.port,
            "database": url.database,
        }


class SqliteTarget:
    """Fresh SQLite files in one temporary directory."""

    backend = "sqlite"

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    async def fresh(self, name: str) -> Store:
        """A new, empty database file."""
        path = self._directory / f"{name}-{uuid.uuid4().hex[:8]}.db"
        return Store("sqlite", f"sqlite:///{path}", path)

    def settings(self) -> str:
        """The durability settings every system runs with."""
        return "SQLite file, journal_mode=WAL, synchronous=NORMAL (all systems), busy_timeout=30s"


class PostgresTarget:
    """Fresh databases on one PostgreSQL server."""

    backend = "postgres"

    def __init__(self, server_url: str) -> None:
        self._server = Store("postgres", server_url)
        self._settings = ""

    async def fresh(self, name: str) -> Store:
        """A new, empty database (CREATE DATABASE)."""
        database = f"bench_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg().connect(**self._server.asyncpg_args())
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
            if not self._settings:
                rows = await conn.fetch(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('fsync', 'synchronous_commit', 'wal_level', 'shared_buffers', 'server_version')"
                )
                self._settings = ", ".join(f"{r['name']}={r['setting']}" for r in rows)
        finally:
            await conn.close()
        url = make_url(self._server.url).set(database=database)
        return Store("postgres", url.render_as_string(hide_password=False))

    def settings(self) -> str:
        """The server settings every system runs with (the same server for all)."""
        return f"PostgreSQL ({self._settings}); default isolation READ COMMITTED for all systems"


Target = SqliteTarget | PostgresTarget


async def analyze(store: Store) -> None:
    """Refresh planner statistics, as autovacuum would before long (done the same for every system)."""
    if store.path is not None:
        conn = sqlite3.connect(store.path)
        try:
            conn.execute("ANALYZE")
        finally:
            conn.close()
        return
    conn = await asyncpg().connect(**store.asyncpg_args())
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def asyncpg() -> Any:
    """The asyncpg module (imported on first use; it has no type information)."""
    return importlib.import_module("asyncpg")


@contextlib.contextmanager
def postgres_server() -> Iterator[str | None]:
    """A ``postgresql://`` URL: ``$CHATMEMORY_BENCH_POSTGRES_URL``, else a throwaway ``pgserver``.

    Yields ``None`` when neither is available.
    """
    url = os.environ.get(POSTGRES_ENV)
    if url:
        yield url
        return
    with warnings.catch_warnings():
        # pgserver warns about its environment (no XDG_RUNTIME_DIR, deprecated APIs); none matters here.
        warnings.simplefilter("ignore")
        try:
            pgserver = importlib.import_module("pgserver")
        except ImportError:
            yield None
            return
        workdir = tempfile.mkdtemp(prefix="chatmemory-bench-pg-")
        os.chmod(workdir, 0o755)
        server = pgserver.get_server(workdir, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


@contextlib.asynccontextmanager
async def sqlite_directory() -> AsyncIterator[Path]:
    """A temporary directory for SQLite files, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="chatmemory-bench-") as name:
        yield Path(name)


@contextlib.asynccontextmanager
async def targets_of(which: str) -> AsyncIterator[list[Target]]:
    """The targets of ``which`` backend (``sqlite``, ``postgres`` or ``both``), removed afterwards;
    PostgreSQL's only when a server is available (see ``postgres_server``)."""
    async with contextlib.AsyncExitStack() as stack:
        targets: list[Target] = []
        if which in ("sqlite", "both"):
            targets.append(SqliteTarget(await stack.enter_async_context(sqlite_directory())))
        if which in ("postgres", "both"):
            server = stack.enter_context(postgres_server())
            if server is not None:
                targets.append(PostgresTarget(server))
        yield targets
