"""The ``chatmemory`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from chatmemory import _migrate
from chatmemory._db import Database, create_engine, resolve_url
from chatmemory.errors import ChatMemoryError


def _url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="database URL (default: $CHATMEMORY_URL, else the user data directory)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatmemory", description="The persisted record of AI conversations."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the current version")
    _url_option(migrate)
    migrate.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    migrate.set_defaults(run=_migrate_command)

    check = commands.add_parser("check", help="exit 1 unless the database schema is current")
    _url_option(check)
    check.set_defaults(run=_check_command)
    return parser


async def _migrate_command(args: argparse.Namespace) -> int:
    if args.sql:
        sys.stdout.write(_migrate.offline_sql(args.url))
        return 0
    db = Database(create_engine(args.url))
    try:
        before = await _migrate.current_revision(db)
        await _migrate.upgrade(db)
    finally:
        await db.engine.dispose()
    head = _migrate.head_revision()
    where = resolve_url(args.url).render_as_string(hide_password=True)
    print(
        f"{where}: already at {head}"
        if before == head
        else f"{where}: upgraded {before or 'empty'} -> {head}"
    )
    return 0


async def _check_command(args: argparse.Namespace) -> int:
    db = Database(create_engine(args.url))
    try:
        current = await _migrate.current_revision(db)
    finally:
        await db.engine.dispose()
    head = _migrate.head_revision()
    if current == head:
        print(f"schema is current ({head})")
        return 0
    print(f"schema is at {current or 'empty'}, needs {head}: run `chatmemory migrate`", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(asyncio.run(args.run(args)))
    except ChatMemoryError as exc:
        print(f"chatmemory: {exc}", file=sys.stderr)
        return 2


def _entry() -> None:
    raise SystemExit(main())
