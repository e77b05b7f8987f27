"""The entry point: a store on one database."""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any

from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from chatmemory import _migrate
from chatmemory._db import Database, create_engine
from chatmemory.limits import Limits
from chatmemory.principal import Principal, current_principal
from chatmemory.scope import Scope

__all__ = ["ChatMemory"]


class ChatMemory:
    """The conversation store on one database.

    ``ChatMemory(engine)`` wraps an engine the caller owns (and never disposes);
    ``ChatMemory.open(url)`` creates, migrates and finally disposes its own.
    """

    def __init__(self, engine: AsyncEngine, *, limits: Limits | None = None) -> None:
        self._db = Database(engine)
        self._owns_engine = False
        self.limits = limits or Limits()

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
        **options: Any,
    ) -> _Opening:
        """Open the store at ``url`` (default ``$CHATMEMORY_URL``, else a SQLite file in the
        user data directory). Use as ``async with ChatMemory.open(...) as memory`` or
        ``memory = await ChatMemory.open(...)`` followed by ``await memory.close()``.

        ``migrate=True`` upgrades the schema to the current version (safe when several
        processes start at once); ``migrate=False`` only checks it. ``options`` go to
        SQLAlchemy's ``create_async_engine``.

        Raises:
            SchemaOutOfDateError: ``migrate=False`` and the schema is not current.
            StorageError: the database cannot be reached.
            InvalidInputError: the URL is not a supported database URL.
        """
        return _Opening(cls, url, migrate, limits, options)

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
        """Dispose the engine if this store created it."""
        if self._owns_engine:
            await self._db.dispose()

    async def __aenter__(self) -> ChatMemory:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _Opening:
    """What ``ChatMemory.open`` returns: awaitable, and an async context manager."""

    def __init__(
        self, cls: type[ChatMemory], url: str | URL | None, migrate: bool, limits: Limits | None, options: Any
    ) -> None:
        self._args = (cls, url, migrate, limits, options)
        self._memory: ChatMemory | None = None

    async def _open(self) -> ChatMemory:
        cls, url, migrate, limits, options = self._args
        memory = cls(create_engine(url, **options), limits=limits)
        memory._owns_engine = True
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
