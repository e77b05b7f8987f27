"""Running the shipped Alembic migrations from code."""

from __future__ import annotations

import functools
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from chatmemory._db import Database, refused_as_read_only, resolve_url
from chatmemory._sql import UPKEEP_WITHOUT_TIMEOUT
from chatmemory.errors import InvalidInputError, SchemaOutOfDateError, StorageError

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only to change the schema: opening an up-to-date database reads the
# version table with plain SQL, which keeps start-up fast.

VERSION_TABLE = "chatmemory_alembic_version"
# Any constant works; it only has to be the same in every process migrating this database.
_PG_LOCK_KEY = 0x63686174


def script_location() -> Path:
    """The migrations: inside the installed package, or the repository's ``migrations/``."""
    packaged = Path(__file__).parent / "_migrations"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "migrations"


def alembic_config(url: URL | None = None) -> Config:
    from alembic.config import Config

    config = Config(stdout=io.StringIO())
    config.set_main_option("script_location", str(script_location()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


_REVISION = re.compile(r"^(down_revision|revision)\b[^=]*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)


@functools.cache
def _revisions() -> tuple[frozenset[str], str]:
    """Every shipped revision, and the newest: the one no other migration revises (read from
    the scripts' text)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in (script_location() / "versions").glob("*.py"):
        for name, value in _REVISION.findall(script.read_text(encoding="utf-8")):
            (revisions if name == "revision" else revised).add(value)
    (head,) = revisions - revised
    return frozenset(revisions), head


def head_revision() -> str:
    """The newest revision."""
    return _revisions()[1]


def refuse_unknown(current: str | None, command_hint: str) -> None:
    """Raises SchemaOutOfDateError (``newer``) when ``current`` is no revision this chatmemory
    ships: a newer one migrated the database, and neither migrating nor opening it can help."""
    if current is not None and current not in _revisions()[0]:
        raise SchemaOutOfDateError(current, head_revision(), command_hint, newer=True)


def _current(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


async def current_revision(db: Database) -> str | None:
    async with db.transaction() as conn:
        return await conn.run_sync(_current)


async def upgrade(db: Database, revision: str = "head") -> None:
    """Upgrade to ``revision``; safe when several processes do it at once.

    The whole upgrade runs in one transaction holding the database's write lock (SQLite)
    or an advisory lock (PostgreSQL), so a second process waits and then finds it done.
    A database at a revision this chatmemory does not know (a newer one migrated it) is left
    as it is: SchemaOutOfDateError (``newer``).
    """
    current = await current_revision(db)
    if revision == "head" and current == head_revision():
        return
    refuse_unknown(current, "chatmemory migrate")
    try:
        async with db.transaction(write=True) as conn:
            await _hold_migration_lock(db, conn)
            await conn.run_sync(_run_command, "upgrade", revision)
    except StorageError as exc:
        if not refused_as_read_only(exc):
            raise
        raise SchemaOutOfDateError(current, head_revision(), "chatmemory migrate", read_only=True) from exc


async def downgrade(db: Database, revision: str) -> None:
    """Downgrade to ``revision`` (``"base"`` drops every chatmemory table)."""
    async with db.transaction(write=True) as conn:
        await _hold_migration_lock(db, conn)
        await conn.run_sync(_run_command, "downgrade", revision)


async def _hold_migration_lock(db: Database, conn: AsyncConnection) -> None:
    """On PostgreSQL, wait for the advisory lock migrations take (SQLite's write transaction is
    the lock already). A migration then runs to its end, however large the tables it indexes
    again, free of the role's statement timeout (``UPKEEP_WITHOUT_TIMEOUT``): under it an upgrade
    that outlasts it would fail at every start."""
    if not db.is_sqlite:
        await conn.exec_driver_sql(UPKEEP_WITHOUT_TIMEOUT.postgres)
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


def _run_command(conn: Connection, name: str, revision: str) -> None:
    from alembic import command

    # Read again under the lock: another process may have migrated it meanwhile.
    refuse_unknown(_current(conn), "chatmemory migrate")
    config = alembic_config()
    config.attributes["connection"] = conn
    getattr(command, name)(config, revision)


async def verify(db: Database, command_hint: str) -> None:
    """Raises SchemaOutOfDateError unless the schema is at head."""
    current = await current_revision(db)
    refuse_unknown(current, command_hint)
    if current != head_revision():
        raise SchemaOutOfDateError(current, head_revision(), command_hint)


def offline_sql(url: str | URL | None, revision: str = "head", *, start: str | None = None) -> str:
    """The SQL that upgrading a database at revision ``start`` (default: an empty one) to
    ``revision`` would run, without connecting.

    Raises:
        InvalidInputError: ``start`` is not one of the schema's revisions.
    """
    from alembic import command
    from alembic.script import ScriptDirectory

    resolved = resolve_url(url)
    plain = resolved.set(drivername=resolved.get_backend_name())
    config = alembic_config(plain)
    if start is not None:
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        if start not in known:
            listed = ", ".join(sorted(known))
            raise InvalidInputError("from", f"not a revision of this schema (one of {listed})")
        revision = f"{start}:{revision}"
    out = io.StringIO()
    config.output_buffer = out
    command.upgrade(config, revision, sql=True)
    return out.getvalue()
