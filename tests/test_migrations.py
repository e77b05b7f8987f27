"""Migrations: no drift from the models, reversible, own version table, safe to run at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, make_url, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateTable

from chatmemory import ChatMemory, NewMessage, Principal, SchemaOutOfDateError
from chatmemory._db import Database, create_engine
from chatmemory._migrate import VERSION_TABLE, downgrade, head_revision, upgrade
from chatmemory._schema import metadata

ROOT = Path(__file__).parent.parent


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "compare_type": True, "include_object": _ours}
    )
    return list(compare_metadata(context, metadata))


def _ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ == "table":
        return name in metadata.tables
    return True


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_models_match_migrations(memory: ChatMemory) -> None:
    async with memory.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
        tables = await conn.run_sync(_tables)
    assert {"chat_conversations", "chat_histories", "chat_messages", VERSION_TABLE} <= tables
    assert "alembic_version" not in tables


async def test_required_index_exists(memory: ChatMemory) -> None:
    def indexes(conn: Connection) -> list[list[str | None]]:
        return [ix["column_names"] for ix in inspect(conn).get_indexes("chat_messages")]

    async with memory.engine.connect() as conn:
        assert ["chat_history_id", "created_at"] in await conn.run_sync(indexes)


async def test_only_keyed_messages_are_in_the_key_index(memory: ChatMemory, backend: str) -> None:
    """Messages without a key would only cost every append one more index entry."""
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", f"m{i}") for i in range(20)])
    await alice.append_messages(run.id, [NewMessage("user", "keyed", key="k1")])
    name = {"name": "ix_chat_messages_chat_history_id_key"}
    async with memory.engine.connect() as conn:
        if backend == "sqlite":
            entries = "SELECT sum(ncell) FROM dbstat WHERE name = :name AND pagetype = 'leaf'"
            assert (await conn.execute(text(entries), name)).scalar() == 1
        else:
            condition = (
                "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
                "WHERE indexrelid = CAST(:name AS regclass)"
            )
            predicate = (await conn.execute(text(condition), name)).scalar()
            assert predicate == "((key IS NOT NULL) AND (deleted_at IS NULL))"


_CHECKED: dict[str, dict[str, tuple[str, ...]]] = {  # table: {column: the values its CHECK allows}
    "chat_histories": {"status": ("running", "completed", "failed", "cancelled")},
    "chat_messages": {
        "role": ("system", "user", "assistant", "tool"),
        "status": ("complete", "pending", "error"),
    },
}


async def _checks(engine: AsyncEngine) -> list[str]:
    """The CHECK clauses SQLite keeps in the two tables' stored definitions."""
    async with engine.connect() as conn:
        tables = "SELECT sql FROM sqlite_master WHERE name IN ('chat_histories', 'chat_messages') ORDER BY 1"
        found = await conn.execute(text(tables))
        return [line.strip() for (sql,) in found for line in sql.splitlines() if "CHECK" in line]


async def _refused_values(engine: AsyncEngine) -> dict[str, list[str]]:
    """For each checked column, which values an update is refused: each allowed one, then some
    that are not (case, spaces, an empty string)."""
    async with engine.connect() as conn:
        ids = {
            table: (await conn.execute(text(f"SELECT id FROM {table} LIMIT 1"))).scalar_one()
            for table in _CHECKED
        }
    refused: dict[str, list[str]] = {}
    for table, columns in _CHECKED.items():
        for column, allowed in columns.items():
            for value in (*allowed, allowed[0].upper(), f"{allowed[0]} ", ""):
                try:
                    async with engine.begin() as conn:
                        update = text(f"UPDATE {table} SET {column} = :v WHERE id = :id")
                        await conn.execute(update, {"v": value, "id": ids[table]})
                        await conn.rollback()
                except IntegrityError:
                    refused.setdefault(f"{table}.{column}", []).append(value)
    return refused


async def test_role_and_status_checks_compare_instead_of_listing(db_url: str, backend: str) -> None:
    """Migration 0009: SQLite's checks of a message's role and status and a history's status
    compare the value with each allowed one (an ``IN`` list made SQLite build a temporary index
    for every row written); the same values pass and fail at 0008, at head and back."""
    engine = create_engine(db_url)
    db = Database(engine)
    expected = {
        "chat_histories.status": ["RUNNING", "running ", ""],
        "chat_messages.role": ["SYSTEM", "system ", ""],
        "chat_messages.status": ["COMPLETE", "complete ", ""],
    }
    listed = [
        "CONSTRAINT ck_chat_histories_status CHECK "
        "(status IN ('running', 'completed', 'failed', 'cancelled')),",
        "CONSTRAINT ck_chat_messages_role CHECK (role IN ('system', 'user', 'assistant', 'tool')),",
        "CONSTRAINT ck_chat_messages_status CHECK (status IN ('complete', 'pending', 'error')),",
    ]
    compared = [
        "CONSTRAINT ck_chat_histories_status CHECK (status = 'running' OR status = 'completed' OR "
        "status = 'failed' OR status = 'cancelled'),",
        "CONSTRAINT ck_chat_messages_role CHECK (role = 'system' OR role = 'user' OR role = 'assistant' OR "
        "role = 'tool'),",
        "CONSTRAINT ck_chat_messages_status CHECK "
        "(status = 'complete' OR status = 'pending' OR status = 'error'),",
    ]
    try:
        await upgrade(db, "0008")
        async with ChatMemory(engine) as memory:
            alice = memory.scoped(Principal("alice"))
            conv = await alice.start_conversation()
            run = await alice.start_history(conv.id, model="m")
            await alice.append_messages(run.id, [NewMessage("user", "kept")])
        assert await _refused_values(engine) == expected
        if backend == "sqlite":
            assert await _checks(engine) == listed
        await upgrade(db)
        assert await _refused_values(engine) == expected
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT content FROM chat_messages"))).scalar_one() == "kept"
            if backend == "sqlite":
                assert (await conn.execute(text("PRAGMA integrity_check"))).scalar_one() == "ok"
        if backend == "sqlite":
            assert await _checks(engine) == compared
            # What the models create is what the migrations leave.
            created = [
                str(CreateTable(metadata.tables[name]).compile(dialect=sqlite.dialect()))
                for name in ("chat_histories", "chat_messages")
            ]
            modelled = [line.strip() for sql in created for line in sql.splitlines() if "CHECK" in line]
            assert modelled == compared
        await downgrade(db, "0008")
        assert await _refused_values(engine) == expected
        if backend == "sqlite":
            assert await _checks(engine) == listed
    finally:
        await engine.dispose()


async def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    engine = create_engine(db_url)
    db = Database(engine)
    try:
        async with engine.begin() as conn:  # a host application's own alembic table
            await conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            await conn.execute(text("INSERT INTO alembic_version VALUES ('hostapp1')"))
        await upgrade(db)
        await downgrade(db, "base")
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == {"alembic_version", VERSION_TABLE}
        await upgrade(db)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            host = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert host == "hostapp1"
    finally:
        await engine.dispose()


async def test_open_without_migrate_only_checks(db_url: str, backend: str) -> None:
    with pytest.raises(SchemaOutOfDateError) as err:
        async with ChatMemory.open(db_url, migrate=False):
            pass
    assert "chatmemory migrate" in str(err.value) and err.value.head == head_revision()
    if backend == "sqlite":  # only checked: the file is not created, nor a directory for it
        assert not Path(make_url(db_url).database or "").exists()
        elsewhere = Path(make_url(db_url).database or "").parent / "new" / "chat.db"
        with pytest.raises(SchemaOutOfDateError, match=str(elsewhere)):
            await ChatMemory.open(f"sqlite:///{elsewhere}", migrate=False)
        assert not elsewhere.parent.exists()
    async with ChatMemory.open(db_url) as memory:
        await memory.scoped(Principal("a")).start_conversation()
    async with ChatMemory.open(db_url, migrate=False) as memory:
        assert len((await memory.scoped(Principal("a")).list_conversations()).items) == 1


async def test_a_database_a_newer_chatmemory_migrated_is_refused_and_left_as_it_is(db_url: str) -> None:
    """A database at a revision this chatmemory does not ship (a newer one migrated it) is
    refused with SchemaOutOfDateError, however it is opened or migrated, naming the upgrade of
    chatmemory rather than ``chatmemory migrate``; nothing in it changes."""
    async with ChatMemory.open(db_url) as memory:
        await memory.scoped(Principal("a")).start_conversation()
        async with memory._db.transaction(write=True) as conn:
            await conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    for migrate in (True, False):
        with pytest.raises(SchemaOutOfDateError) as err:
            async with ChatMemory.open(db_url, migrate=migrate):
                pass
        assert err.value.newer and err.value.current == "9999" and "upgrade chatmemory" in str(err.value)
    for command in ("migrate", "check"):
        out = _cli(command, "--url", db_url)
        assert out.returncode == 2 and "upgrade chatmemory" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    db = Database(create_engine(db_url))
    try:
        async with db.transaction() as conn:
            assert (
                await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
            ).scalar_one() == "9999"
            assert (await conn.execute(text("SELECT count(*) FROM chat_conversations"))).scalar_one() == 1
    finally:
        await db.engine.dispose()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatmemory", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_cli_migrate_and_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'chat.db'}"
    before = _cli("check", "--url", url)
    assert before.returncode == 1 and "chatmemory migrate" in before.stderr
    assert not (tmp_path / "new").exists()  # a check of a file not there yet does not create it
    first = _cli("migrate", "--url", url)
    assert first.returncode == 0 and f"-> {head_revision()}" in first.stdout
    assert "already at" in _cli("migrate", "--url", url).stdout
    after = _cli("check", "--url", url)
    assert after.returncode == 0 and "current" in after.stdout


def test_cli_offline_sql() -> None:
    for url, marker in (
        ("sqlite:///x.db", "CREATE TABLE chat_messages"),
        ("postgresql://u@h/db", "TIMESTAMP WITH TIME ZONE"),
    ):
        out = _cli("migrate", "--sql", "--url", url)
        assert out.returncode == 0, out.stderr
        assert marker in out.stdout and VERSION_TABLE in out.stdout


def test_cli_offline_sql_from_a_revision_has_only_what_comes_after_it(tmp_path: Path) -> None:
    """A DBA upgrading a database at an older revision gets the statements its upgrade runs,
    not the script that creates the schema; that script, run on such a database, upgrades it."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    whole = _cli("migrate", "--sql", "--url", url)
    later = _cli("migrate", "--sql", "--from", "0008", "--url", url)
    assert later.returncode == 0, later.stderr
    assert "CREATE TABLE chat_messages" in whole.stdout
    assert (
        "CREATE TABLE chat_messages" not in later.stdout
        and "chatmemory_alembic_version (" not in later.stdout
    )
    assert "'0008'" in later.stdout and f"'{head_revision()}'" in later.stdout
    assert "'0007'" not in later.stdout
    bad = _cli("migrate", "--sql", "--from", "0099", "--url", url)
    assert bad.returncode == 2 and "invalid from: not a revision of this schema" in bad.stderr
    without_sql = _cli("migrate", "--from", "0008", "--url", url)
    assert without_sql.returncode == 2 and "only goes with --sql" in without_sql.stderr
    assert not (tmp_path / "chat.db").exists()  # none of it connected


def test_cli_reports_bad_url() -> None:
    out = _cli("check", "--url", "mysql://x/y")
    assert out.returncode == 2 and "unsupported database" in out.stderr


_CONCURRENT_OPEN = """
import asyncio, sys
from chatmemory import ChatMemory, Principal
async def main():
    async with ChatMemory.open(sys.argv[1]) as memory:
        await memory.scoped(Principal("p" + sys.argv[2])).start_conversation("x")
asyncio.run(main())
"""


def test_many_processes_migrate_a_new_database_at_once(db_url: str, backend: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_OPEN, db_url, str(i)], cwd=ROOT, stderr=subprocess.PIPE
        )
        for i in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    out = _cli("check", "--url", db_url)
    assert out.returncode == 0, out.stderr
    if backend == "sqlite":
        # One of them edited the stored definitions (0009) while the others waited with the file open.
        with closing(sqlite3.connect(make_url(db_url).database or "")) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            (table,) = connection.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'chat_messages'"
            ).fetchone()
            assert "CHECK (role = 'system' OR role = 'user'" in table


def test_head_revision_agrees_with_alembic() -> None:
    from alembic.script import ScriptDirectory

    from chatmemory._migrate import alembic_config

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_opening_a_current_database_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert _cli("migrate", "--url", url).returncode == 0
    code = (
        "import asyncio, sys\n"
        "from chatmemory import ChatMemory\n"
        "async def main():\n"
        f"    async with ChatMemory.open({url!r}):\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_read_only_database_at_an_older_revision_is_refused_saying_why(
    kind: str, tmp_path: Path, postgres_url: str
) -> None:
    """A database behind this chatmemory, opened where it cannot be written (a SQLite file opened
    ``mode=ro``, a PostgreSQL standby or read-only database): migrating it at open is refused
    with SchemaOutOfDateError (``read_only``) saying so, not a bare write error; nothing changes."""
    from tests._postgres import drop_database
    from tests.conftest import _create_database

    if kind == "sqlite":
        path = tmp_path / "old.db"
        url = f"sqlite:///{path}"
        read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    else:
        url = read_only = await _create_database(postgres_url)
    try:
        async with ChatMemory.open(url) as memory:
            await memory.scoped(Principal("a")).start_conversation()
            await downgrade(memory._db, "0008")
            if kind == "postgres":
                async with memory.engine.connect() as conn:
                    name = memory.engine.url.database
                    read_only_by_default = f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
                    await conn.execute(text(read_only_by_default))
                    await conn.commit()
        with pytest.raises(SchemaOutOfDateError) as err:
            async with ChatMemory.open(read_only):
                pass
        assert (err.value.read_only, err.value.newer, err.value.current) == (True, False, "0008")
        assert "read-only" in str(err.value) and "chatmemory migrate" in str(err.value)
        with pytest.raises(SchemaOutOfDateError) as unchecked:
            async with ChatMemory.open(read_only, migrate=False):
                pass
        assert not unchecked.value.read_only and unchecked.value.current == "0008"
    finally:
        if kind == "postgres":
            await drop_database(postgres_url, url)


async def test_an_upgrade_runs_to_its_end_under_a_shorter_statement_timeout(
    postgres_url: str,
) -> None:
    """PostgreSQL with a ``statement_timeout`` (as managed services set one for the application):
    an upgrade that indexes a large table again (0007's key index over 100,000 messages) takes
    longer than the timeout allows, and still runs to its end at open; the store's own statements
    keep the timeout. (It failed at every open before: "canceling statement due to statement
    timeout".)"""
    from tests._postgres import (
        append_all,
        create_database,
        drop_database,
        set_statement_timeout,
        statement_timeout,
    )

    url = await create_database(postgres_url)
    try:
        async with ChatMemory.open(url) as memory:
            alice = memory.scoped(Principal("alice"))
            run = await alice.start_history((await alice.start_conversation()).id, model="m")
            await append_all(
                alice, run.id, [NewMessage("user", f"m{i}", key=f"k{i}") for i in range(100_000)], 1_000
            )
            await downgrade(memory._db, "0006")
        await set_statement_timeout(url, 10)
        async with ChatMemory.open(url) as memory:
            assert await statement_timeout(memory) == "10ms"
            async with memory.engine.connect() as conn:
                version = (await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))).scalar_one()
                assert version == head_revision()
                keyed = "SELECT count(*) FROM pg_indexes WHERE indexname = :name"
                name = "ix_chat_messages_chat_history_id_key"
                assert (await conn.execute(text(keyed), {"name": name})).scalar_one() == 1
            history = await memory.scoped(Principal("alice")).get_history(run.id, messages=False)
            assert history.status == "running"
    finally:
        await drop_database(postgres_url, url)
