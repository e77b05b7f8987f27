"""The entry point: a store on one database."""

from __future__ import annotations

import math
from collections.abc import Generator
from types import TracebackType
from typing import Any

from sqlalchemy import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from chatmemory import _migrate
from chatmemory._db import Database, default_url, missing_file, owned_engine
from chatmemory.errors import InvalidInputError, SchemaOutOfDateError
from chatmemory.limits import Limits
from chatmemory.principal import Principal, current_principal
from chatmemory.scope import Scope

__all__ = ["ChatMemory"]

WATCH_INTERVAL = 0.05
"""Seconds between looks for changes committed by other processes, where nothing notifies."""


def _interval(value: object) -> float:
    """A valid ``watch_interval``.

    Raises:
        InvalidInputError: it is not a positive, finite number of seconds.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidInputError("watch_interval", "must be a positive number of seconds")
    return float(value)


class ChatMemory:
    """The conversation store on one database.

    ``ChatMemory(engine)`` wraps an engine the caller owns (and never disposes);
    ``ChatMemory.open(url)`` creates, migrates and finally disposes its own. Over a caller's
    engine, watchers re-read every ``watch_interval`` seconds for changes made elsewhere.

    Raises:
        InvalidInputError: ``watch_interval`` is not a positive number of seconds.
    """

    def __init__(
        self, engine: AsyncEngine, *, limits: Limits | None = None, watch_interval: float = WATCH_INTERVAL
    ) -> None:
        if not isinstance(engine, AsyncEngine):
            hint = "; open a URL with ChatMemory.open(url)" if isinstance(engine, (str, URL)) else ""
            given = type(engine).__name__
            raise TypeError(f"ChatMemory(engine) takes a SQLAlchemy AsyncEngine, not {given}{hint}")
        self._db = Database(engine, watch_interval=_interval(watch_interval))
        self._owns_engine = False
        self.limits = limits or Limits()

    @classmethod
    def _from_url(
        cls, url: str | URL | None, limits: Limits | None, watch_interval: float, options: dict[str, Any]
    ) -> ChatMemory:
        interval = _interval(watch_interval)
        engine, pool_size = owned_engine(url, options)
        memory = cls.__new__(cls)
        memory._db = Database(
            engine,
            owned=True,
            pool_size=pool_size,
            watch_interval=interval,
            connect_args=options.get("connect_args"),
        )
        memory._owns_engine = True
        memory.limits = limits or Limits()
        return memory

    @property
    def engine(self) -> AsyncEngine:
        return self._db.engine

    @classmethod
    def open(
        cls,
        url: str | URL | None = None,
        *,
        migrate: bool = True,
        limits: Limits | None = None,
        watch_interval: float = WATCH_INTERVAL,
        **options: Any,
    ) -> _Opening:
        """Open the store at ``url`` (default ``$CHATMEMORY_URL``, else a SQLite file in the
        user data directory). Use as ``async with ChatMemory.open(...) as memory`` or
        ``memory = await ChatMemory.open(...)`` followed by ``await memory.close()``.

        ``migrate=True`` upgrades the schema to the current version (safe when several
        processes start at once); ``migrate=False`` only checks it. ``options`` go to
        SQLAlchemy's ``create_async_engine`` (used for migrations), except ``pool_size`` and
        ``max_overflow``, which size the store's own PostgreSQL pools; on PostgreSQL the store's
        own connections connect with the URL's parameters and ``connect_args``, as the
        engine's do. ``watch_interval`` is how often, in seconds, watchers look for changes
        other processes committed where no notification tells them (SQLite; PostgreSQL while
        its listener is down).

        Raises:
            SchemaOutOfDateError: ``migrate=False`` and the schema is not current.
            StorageError: the database cannot be reached.
            InvalidInputError: the URL is not a supported database URL, or ``watch_interval``
                is not a positive number.
        """
        return _Opening(cls, url, migrate, limits, watch_interval, options)

    def scoped(self, principal: Principal | None = None) -> Scope:
        """The view of ``principal`` (default: the one set with ``use_principal``).

        Raises:
            NoPrincipalError: none given and none set.
        """
        return Scope(self._db, principal if principal is not None else current_principal(), self.limits)

    async def migrate(self) -> None:
        """Upgrade the schema to the current version (safe when several processes do it at once)."""
        await _migrate.upgrade(self._db)

    async def check_schema(self) -> None:
        """Raises SchemaOutOfDateError unless the schema is current."""
        url = self.engine.url.render_as_string(hide_password=True)
        await _migrate.verify(self._db, f"chatmemory migrate --url '{url}'")

    async def close(self) -> None:
        """Wait for calls still running, then close the connections this store opened and dispose
        the engine if it created it. Idempotent; from any thread or event loop. A close that is
        cancelled midway leaves the closing going on; the next close returns once it is done.

        A store opened from a URL on PostgreSQL waits 10 seconds at most: calls still waiting
        then (for a lock or a connection) fail with StorageError. Imports, purges and migrations
        still running are waited for up to 60 seconds. A call made once the close has begun,
        from any thread or event loop, fails at once with StorageError."""
        await self._db.close()
        if self._owns_engine:
            await self._db.engine.dispose()

    async def __aenter__(self) -> ChatMemory:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _Opening:
    """What ``ChatMemory.open`` returns: awaitable, and an async context manager."""

    def __init__(
        self,
        cls: type[ChatMemory],
        url: str | URL | None,
        migrate: bool,
        limits: Limits | None,
        watch_interval: float,
        options: Any,
    ) -> None:
        self._args = (cls, url, migrate, limits, watch_interval, options)
        self._memory: ChatMemory | None = None

    async def _open(self) -> ChatMemory:
        cls, url, migrate, limits, watch_interval, options = self._args
        if not migrate and missing_file(url):  # empty: said without creating the file (or its directory)
            shown = make_url(url if url is not None else default_url()).render_as_string(hide_password=True)
            raise SchemaOutOfDateError(None, _migrate.head_revision(), f"chatmemory migrate --url '{shown}'")
        memory = cls._from_url(url, limits, watch_interval, options)
        try:
            await (memory.migrate() if migrate else memory.check_schema())
        except BaseException:
            await memory.close()
            raise
        return memory

    def __await__(self) -> Generator[Any, None, ChatMemory]:
        return self._open().__await__()

    async def __aenter__(self) -> ChatMemory:
        self._memory = await self._open()
        return self._memory

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._memory is not None:
            await self._memory.close()
