"""asyncpg's connection arguments for a ``postgresql://`` URL, the same for every connection a
store opens: its engine's (migrations, imports, purges), its pool's and its LISTEN connection's.

SQLAlchemy's asyncpg dialect hands every query parameter to ``asyncpg.connect`` as a keyword.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import URL
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import ArgumentError

from chatmemory.errors import InvalidInputError

# What SQLAlchemy's asyncpg adapter takes for itself rather than passing to ``asyncpg.connect``.
SQLALCHEMY_ONLY = frozenset(
    {"prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn"}
)


def connect_options(url: URL, connect_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``asyncpg.connect``'s arguments for ``url`` (and a caller's ``connect_args``), as the
    store's engine connects with them.

    Raises:
        InvalidInputError: the URL's hosts and ports do not pair up.
    """
    try:
        dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
        _, options = dialect.create_connect_args(url)  # type: ignore[no-untyped-call]
    except ArgumentError as exc:
        raise InvalidInputError("url", str(exc)) from exc
    options.update(connect_args or {})
    return {k: v for k, v in options.items() if k not in SQLALCHEMY_ONLY}
