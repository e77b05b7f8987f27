"""Migration 0009 edits SQLite's stored table definitions in place: what happens when the edit
fails, and what connections opened before it see afterwards."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

from chatmemory import ChatMemory, NewMessage, Principal, StorageError
from chatmemory._db import Database, create_engine
from chatmemory._migrate import downgrade, head_revision, upgrade

LISTED = "CHECK (role IN ('system', 'user', 'assistant', 'tool'))"
COMPARED = "CHECK (role = 'system' OR role = 'user' OR role = 'assistant' OR role = 'tool')"


def _stored(path: Path) -> tuple[str, str, str]:
    """The database's revision, its integrity check and ``chat_messages``' stored definition."""
    with closing(sqlite3.connect(path)) as connection:
        (revision,) = connection.execute("SELECT version_num FROM chatmemory_alembic_version").fetchone()
        (integrity,) = connection.execute("PRAGMA integrity_check").fetchone()
        (table,) = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'chat_messages'").fetchone()
    return revision, integrity, table


async def _at(path: Path, revision: str, migrate: Callable[[Database, str], Any] = upgrade) -> None:
    engine = create_engine(f"sqlite:///{path}")
    try:
        await migrate(Database(engine), revision)
    finally:
        await engine.dispose()


def _on_each_connection(engine: AsyncEngine, install: Callable[[Any], Any]) -> None:
    """Run ``install(aiosqlite_connection)`` (a coroutine) on every connection the engine opens."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connected(dbapi_connection: Any, _record: Any) -> None:
        await_only(install(dbapi_connection.driver_connection))


@pytest.mark.parametrize("start", ["0006", "0008"])
async def test_an_error_that_ends_the_transaction_fails_the_upgrade(tmp_path: Path, start: str) -> None:
    """An error that makes SQLite roll back the whole transaction while the definitions are edited
    (an I/O error, a full disk, an interrupt; here an interrupt) fails the upgrade with the
    database's error, and the database stays at the revision it had: the upgrade does not go on
    outside any transaction, stamping a revision whose changes were rolled back."""
    path = tmp_path / "c.db"
    await _at(path, start)
    editing = False

    def trace(statement: str) -> None:
        nonlocal editing
        editing = statement.lstrip().upper().startswith("UPDATE SQLITE_MASTER")

    async def install(connection: Any) -> None:
        await connection.set_trace_callback(trace)
        await connection.set_progress_handler(lambda: int(editing), 1)

    engine = create_engine(f"sqlite:///{path}")
    _on_each_connection(engine, install)
    try:
        with pytest.raises(StorageError, match="interrupted"):
            await upgrade(Database(engine))
    finally:
        await engine.dispose()
    revision, integrity, table = _stored(path)
    assert (revision, integrity) == (start, "ok")
    assert LISTED in table
    await _at(path, "head")  # and a later upgrade completes
    revision, integrity, table = _stored(path)
    assert (revision, integrity) == (head_revision(), "ok")
    assert COMPARED in table


async def test_a_connection_refused_the_edit_keeps_the_in_lists(tmp_path: Path) -> None:
    """A connection that may not write the schema table (an authorizer here, defensive mode on
    Python 3.12+) upgrades to 0009 keeping the ``IN`` lists, and turns ``writable_schema`` off."""
    path = tmp_path / "c.db"
    await _at(path, "0008")
    ran: list[str] = []

    def refuse(action: int, table: str | None, *_: Any) -> int:
        editing = action == sqlite3.SQLITE_UPDATE and table == "sqlite_master"
        return sqlite3.SQLITE_DENY if editing else sqlite3.SQLITE_OK

    async def install(connection: Any) -> None:
        await connection.set_trace_callback(ran.append)
        await connection.set_authorizer(refuse)

    engine = create_engine(f"sqlite:///{path}")
    _on_each_connection(engine, install)
    try:
        # To 0009 only: the authorizer refuses the schema table's update every CREATE TABLE makes.
        await upgrade(Database(engine), "0009")
    finally:
        await engine.dispose()
    revision, integrity, table = _stored(path)
    assert (revision, integrity) == ("0009", "ok")
    assert LISTED in table
    pragmas = [statement for statement in ran if "writable_schema" in statement]
    assert pragmas == ["PRAGMA writable_schema = ON", "PRAGMA writable_schema = OFF"]
    await _at(path, "0008", downgrade)
    assert _stored(path) == ("0008", "ok", table)


def _lists_compiled(connection: sqlite3.Connection) -> int:
    """How many ``IN`` lists the connection compiles into a write of a message's role and status
    (each one a temporary index, ``OpenEphemeral``), by the definitions it last read."""
    explain = "EXPLAIN UPDATE chat_messages SET role = 'user', status = 'complete'"
    return [op for _, op, *_ in connection.execute(explain)].count("OpenEphemeral")


async def test_connections_opened_before_the_edit_check_by_the_new_definition(tmp_path: Path) -> None:
    """A connection that had read the ``IN`` lists before another one (as another process would)
    edited them writes by the new definition from its next statement on: it writes valid rows and
    is refused invalid ones. A store kept open across a downgrade and an upgrade goes on writing."""
    path = tmp_path / "c.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", "before")])
        await downgrade(memory._db, "0008")
        await alice.append_messages(run.id, [NewMessage("assistant", "at 0008")])
        # No statement cache: a cached EXPLAIN is never prepared again.
        with closing(sqlite3.connect(path, isolation_level=None, cached_statements=0)) as old:
            old.text_factory = lambda raw: raw.decode(errors="replace")  # EXPLAIN's p4 may be any bytes
            row = old.execute("SELECT * FROM chat_messages").fetchone()
            names = [d[0] for d in old.execute("SELECT * FROM chat_messages").description]
            assert _lists_compiled(old) == 2
            await _at(path, "head")

            def insert_with(role: str, seq: int) -> None:
                values = dict(zip(names, row, strict=True)) | {"id": f"x{seq}", "seq": seq, "role": role}
                old.execute(
                    f"INSERT INTO chat_messages VALUES ({', '.join('?' * len(row))})", list(values.values())
                )

            old.execute("BEGIN")
            insert_with("tool", 100)
            assert _lists_compiled(old) == 0
            for seq, role in enumerate(("Tool", "tool ", ""), start=101):
                with pytest.raises(sqlite3.IntegrityError, match="ck_chat_messages_role"):
                    insert_with(role, seq)
            old.execute("ROLLBACK")
        await alice.append_messages(run.id, [NewMessage("user", "after")])
        assert [m.content for m in await alice.transcript(conv.id)] == ["before", "at 0008", "after"]
    assert _stored(path)[0:2] == (head_revision(), "ok")
