"""Fixtures shared by every test: a fresh database per test on SQLite (a real file) and on PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import make_url

from chatmemory import ChatMemory, Principal
from chatmemory.scope import Scope
from tests._postgres import create_database, drop_database, postgres_server

BACKENDS = ["sqlite", "postgres"]
T = TypeVar("T")
# Test modules that make databases of their own import it under this name.
_create_database = create_database


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def _run_apart(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to completion on an event loop of its own, on a thread of its own: the
    session fixtures that need it are resolved while a test's event loop is already running."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


async def _migrate(url: str) -> None:
    """Open a store on ``url`` once, so the shipped migrations bring it to the current schema."""
    async with ChatMemory.open(url, migrate=True):
        pass


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file that the shipped migrations brought to the current schema, once per run."""
    path = tmp_path_factory.mktemp("template") / "chat.db"
    _run_apart(_migrate(f"sqlite:///{path}"))
    # Closing the last connection checkpoints the write-ahead log: the file alone is the database.
    assert not path.with_name("chat.db-wal").exists()
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> Iterator[str]:
    """The name of a PostgreSQL database that the shipped migrations brought to the current
    schema, once per run; nobody stays connected to it, so CREATE DATABASE can copy it."""
    url = _run_apart(create_database(postgres_url))
    _run_apart(_migrate(url))
    yield str(make_url(url).database)
    _run_apart(drop_database(postgres_url, url))


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a new database on each backend, dropped after the test.

    It is empty, unless the test also uses the ``memory`` store: then it is a copy of a
    database migrated once per run (what opening it would have made of it anyway), so
    Alembic does not run again for every test. tests/test_migrations.py and
    tests/test_upgrade_with_data.py run the migrations themselves on empty databases.
    """
    migrated = "memory" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "chat.db"
        if migrated:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server: str = request.getfixturevalue("postgres_url")
    template = request.getfixturevalue("postgres_template") if migrated else None
    url = await create_database(server, template)
    yield url
    await drop_database(server, url)


@pytest.fixture
def backend(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgres"


@pytest.fixture
async def memory(db_url: str) -> AsyncIterator[ChatMemory]:
    async with ChatMemory.open(db_url) as opened:
        yield opened


@pytest.fixture
def alice(memory: ChatMemory) -> Scope:
    return memory.scoped(Principal("alice"))


@pytest.fixture
def bob(memory: ChatMemory) -> Scope:
    return memory.scoped(Principal("bob"))


@pytest.fixture
def admin(memory: ChatMemory) -> Scope:
    return memory.scoped(Principal("root", admin=True))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything collection created (the frameworks' modules, about 600k objects) lives until
    the end: the collector need not walk it again in every full collection a test makes or
    triggers (each took 0.5-1 s)."""
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No test may be skipped: a skipped PostgreSQL leg is a failure, not a pass."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:
            reporter.write_line(f"{skipped} test(s) skipped: every test must run", red=True)
