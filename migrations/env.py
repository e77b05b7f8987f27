"""Alembic environment for chatmemory's own tables.

chatmemory runs this from code (``chatmemory migrate`` or ``ChatMemory.open(migrate=True)``),
passing a connection in ``config.attributes["connection"]``. Run by the ``alembic`` command
from the repository root instead, it connects to ``sqlalchemy.url`` or ``$CHATMEMORY_URL``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import make_url
from sqlalchemy.engine import Connection

from chatmemory._db import create_engine
from chatmemory._migrate import VERSION_TABLE
from chatmemory._schema import include_object, metadata

config = context.config


def _configure(dialect_name: str, **kwargs: object) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        # Search lives in backend-specific objects (FTS5 tables on SQLite); compare only the rest.
        include_object=include_object(dialect_name),
        **kwargs,  # type: ignore[arg-type]
    )


def _run(connection: Connection) -> None:
    name = connection.dialect.name
    _configure(name, connection=connection, render_as_batch=name == "sqlite")
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
    url = config.get_main_option("sqlalchemy.url")
    _configure(make_url(url).get_backend_name() if url else "", url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    asyncio.run(_run_standalone())
