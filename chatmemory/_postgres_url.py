"""asyncpg's connection arguments for a ``postgresql://`` URL, the same for every connection a
store opens: its engine's (migrations, imports, purges), its pool's and its LISTEN connection's.

SQLAlchemy's asyncpg dialect hands every query parameter to ``asyncpg.connect`` as a keyword,
as text. Here the libpq parameters hosted services put in their URLs become asyncpg's
(``sslmode`` its ``ssl``, ``connect_timeout`` its ``timeout``, ``application_name`` a server
setting), numbers and flags get their types, and a name asyncpg does not take is refused.
"""

from __future__ import annotations

import inspect
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
_RENAMED = {"sslmode": "ssl", "connect_timeout": "timeout"}
_SERVER_SETTINGS = frozenset({"application_name"})
# libpq's channel binding: asyncpg does none, so only the modes that do without it are taken.
_CHANNEL_BINDING = frozenset({"disable", "prefer"})
_SECONDS = frozenset({"timeout", "command_timeout"})
_COUNTS = frozenset({"statement_cache_size", "max_cached_statement_lifetime", "max_cacheable_statement_size"})
_FLAGS = {
    "true": True,
    "on": True,
    "yes": True,
    "1": True,
    "false": False,
    "off": False,
    "no": False,
    "0": False,
}
_SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


def connect_options(url: URL, connect_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``asyncpg.connect``'s arguments for ``url`` (and a caller's ``connect_args``), as the
    store's engine connects with them.

    Raises:
        InvalidInputError: the URL holds a parameter asyncpg does not take, or a value it cannot use.
    """
    try:
        dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
        _, options = dialect.create_connect_args(url)  # type: ignore[no-untyped-call]
    except ArgumentError as exc:
        raise InvalidInputError("url", str(exc)) from exc
    options.update(connect_args or {})
    return {k: v for k, v in asyncpg_arguments(options).items() if k not in SQLALCHEMY_ONLY}


def asyncpg_arguments(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as ``asyncpg.connect`` (behind SQLAlchemy's adapter) takes them: libpq names
    translated, text made the number or flag asyncpg expects.

    Raises:
        InvalidInputError: a parameter asyncpg does not take, or a value it cannot use.
    """
    import asyncpg  # type: ignore[import-untyped]  # only installed with the ``postgres`` extra

    taken = (set(inspect.signature(asyncpg.connect).parameters) - {"dsn", "loop"}) | SQLALCHEMY_ONLY
    arguments: dict[str, Any] = {}
    settings: dict[str, str] = {}
    named: dict[str, str] = {}  # what each argument was given as
    for given, value in options.items():
        if given == "channel_binding":
            if _text(given, value) not in _CHANNEL_BINDING:
                raise InvalidInputError(
                    "url",
                    f"channel_binding={value} cannot be honoured: asyncpg, the driver chatmemory uses, "
                    "does no channel binding; remove it, or use channel_binding=prefer",
                )
            continue  # nothing asked that asyncpg does not do
        if given == "server_settings" and not isinstance(value, Mapping):
            raise InvalidInputError(
                "url", "server_settings is a mapping: give it in connect_args, not the URL"
            )
        if given in _SERVER_SETTINGS:
            settings[given] = _text(given, value)
            continue
        name = _RENAMED.get(given, given)
        if name not in taken:
            raise InvalidInputError(
                "url", f"unknown connection parameter {given!r} (asyncpg's connect() does not take it)"
            )
        if name in arguments:
            raise InvalidInputError("url", f"{named[name]!r} and {given!r} both given; give one")
        arguments[name] = _typed(given, name, value)
        named[name] = given
    if settings:
        # As elsewhere, what ``connect_args`` says wins over the URL.
        arguments["server_settings"] = {**settings, **(arguments.get("server_settings") or {})}
    return arguments


def _typed(given: str, name: str, value: Any) -> Any:
    """``value`` of ``name`` as asyncpg takes it, where it came as text."""
    if not isinstance(value, str):
        if isinstance(value, tuple) and name != "host":  # several hosts are a list of them
            raise InvalidInputError("url", f"{given!r} given more than once")
        return value
    if name in _SECONDS:
        try:
            seconds = float(value)
        except ValueError:
            raise InvalidInputError("url", f"{given} must be a number of seconds, not {value!r}") from None
        if not seconds > 0:
            raise InvalidInputError("url", f"{given} must be a positive number of seconds, not {value!r}")
        return seconds
    if name in _COUNTS:
        try:
            return int(value)
        except ValueError:
            raise InvalidInputError("url", f"{given} must be a whole number, not {value!r}") from None
    if name == "direct_tls":
        if value.lower() not in _FLAGS:
            raise InvalidInputError("url", f"{given} must be true or false, not {value!r}")
        return _FLAGS[value.lower()]
    if name == "ssl" and value not in _SSL_MODES:
        modes = ", ".join(sorted(_SSL_MODES))
        raise InvalidInputError("url", f"{given} must be one of {modes}, not {value!r}")
    return value


def _text(given: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInputError("url", f"{given!r} given more than once")
    return value
