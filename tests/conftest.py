"""Fixtures shared by every test: a fresh database per test on SQLite (a real file) and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from chatmemory import ChatMemory, Principal
from chatmemory.scope import Scope
from tests._postgres import postgres_server

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


async def _create_database(server_url: str) -> str:
    url = make_url(server_url)
    name = f"cm_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(
        user=url.username,
        password=url.password or None,
        host=url.query.get("host") or url.host,
        port=url.port,
        database=url.database,
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return await _create_database(request.getfixturevalue("postgres_url"))


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No test may be skipped: a skipped PostgreSQL leg is a failure, not a pass."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:
            reporter.write_line(f"{skipped} test(s) skipped: every test must run", red=True)
