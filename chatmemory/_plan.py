"""Operations as plans: generators that yield statements and receive their rows (no I/O of their own).

Every scope operation is written once as a plan. A driver runs the whole plan inside one
transaction: synchronously on a SQLite thread, or with awaits on an asyncpg connection. The
SQL a plan names lives in ``_sql``; the values it sends are plain Python (``UUID``,
``datetime``, ``Json``, lists as ``Many``), turned into each driver's types by ``encode``.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeGuard, TypeVar
from uuid import UUID

from chatmemory._sql import SQL

T = TypeVar("T")

Row: TypeAlias = Sequence[Any]


@dataclass(frozen=True, slots=True)
class Json:
    """A value stored in a JSON column (``None`` is SQL NULL)."""

    value: Any


@dataclass(frozen=True, slots=True)
class Many:
    """A list bound as one parameter (a JSON array on SQLite, an array on PostgreSQL)."""

    values: Sequence[Any]


@dataclass(frozen=True, slots=True)
class Stmt:
    """One statement of a plan. ``many`` runs it once per parameter set; ``count`` answers the
    number of rows changed instead of rows; ``bulk`` says it may answer thousands of rows (a
    whole conversation), fetched with the collector paused (see ``collector_paused``). A
    statement with no text for a backend (work that backend does elsewhere, e.g. in a
    trigger) answers no rows there without a round trip.

    A ``many`` statement's rows are dicts of plain values by name, or (``positional``) tuples of
    values already as SQLite stores them, in the order of ``sql.sqlite_names``: SQLite only,
    for rows built by the thousand (``_messages._stored``).

    ``alone`` says the statement is its write's whole work, the plan's first and last, and
    writes nothing wherever the plan then fails: PostgreSQL runs it as a transaction of its own,
    without the round trips of ``BEGIN`` and ``COMMIT``.

    ``snapshot``, on a read's first statement, says its statements must all see the database as
    of one moment (a conversation's counters and histories with their messages, say). SQLite's
    reads always do (each is one transaction); PostgreSQL runs such a read as a ``REPEATABLE
    READ READ ONLY`` transaction, two round trips more than the other reads, whose statements
    each take a snapshot of their own under READ COMMITTED.

    ``unread_keys`` says the statement inserts messages with keys it did not look up (looked up
    under the conversation's lock, they cost a transaction of three statements, and they are
    almost never stored already): where one is, the key index refuses the insert, the statement
    writes nothing, and the driver raises ``KeyTaken`` in its place. The driver then runs, in the
    same call and on the same connection, the plan that looks the keys up (``Database.run``'s
    ``fallback``)."""

    sql: SQL
    params: dict[str, Any] | list[dict[str, Any]] | list[tuple[Any, ...]]
    many: bool = False
    count: bool = False
    bulk: bool = False
    alone: bool = False
    snapshot: bool = False
    unread_keys: bool = False


class KeyTaken(Exception):
    """A ``Stmt.unread_keys`` insert met a key already stored in its history: it wrote nothing."""


Plan: TypeAlias = Generator[Stmt, Any, T]


def positional(rows: list[dict[str, Any]] | list[tuple[Any, ...]]) -> TypeGuard[list[tuple[Any, ...]]]:
    """Whether a ``many`` statement's rows are positional (see ``Stmt``)."""
    return bool(rows) and type(rows[0]) is tuple


def drive(plan: Plan[T], execute: Callable[[Stmt], Any]) -> T:
    """Run ``plan`` to its end, answering each statement with ``execute(statement)``."""
    try:
        stmt = next(plan)
        while True:
            stmt = plan.send(execute(stmt))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a whole conversation is fetched or turned into
    models, if it is on.

    With it running, the thousands of objects a long read allocates outlive the young
    generations' collections that their own allocation triggers, reach the oldest generation
    and soon set off a full collection, which walks every object in the process (longer than
    the read). Paused, they stay young until the next collection after the read: a caller
    that is done with them by then leaves nothing for the old generation, and one that keeps
    them sees them age as any object does. Only the thread that paused it resumes it.
    """
    pause = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause:
            gc.enable()


def sqlite_value(value: Any) -> Any:
    """A plan's value as the SQLite schema stores it (the layout SQLAlchemy's types use)."""
    kind = type(value)
    if kind is str or kind is int or value is None:
        return value
    if isinstance(value, UUID):
        return value.hex
    if isinstance(value, datetime):
        # Years below 1000 with four digits, as SQLAlchemy writes them and ``fromisoformat`` reads.
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(value, Json):
        return None if value.value is None else json.dumps(value.value)
    if isinstance(value, Many):
        return json.dumps([sqlite_value(v) for v in value.values])
    return value


def postgres_value(value: Any) -> Any:
    """A plan's value as asyncpg sends it."""
    kind = type(value)
    if kind is str or kind is int or value is None:
        return value
    if isinstance(value, Json):
        return None if value.value is None else json.dumps(value.value)
    if isinstance(value, Many):
        return [postgres_value(v) for v in value.values]
    return value
