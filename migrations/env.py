"""Alembic environment for chatmemory's own tables.

chatmemory runs this from code (``chatmemory migrate`` or ``ChatMemory.open(migrate=True)``),
passing a connection in ``config.attributes["connection"]``. Run by the ``alembic`` command
from the repository root instead, it connects to ``sqlalchemy.url`` or ``$CHATMEMORY_URL``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from chatmemory._db import create_engine
from chatmemory._migrate import VERSION_TABLE
from chatmemory._schema import metadata

config = context.config


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # Search indexes live in backend-specific tables (migration 0002) the models do not describe.
    return type_ != "table" or name in metadata.tables


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        include_object=_include_object,
        **kwargs,  # type: ignore[arg-type]
    )


def _run(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or None)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    asyncio.run(_run_standalone())
