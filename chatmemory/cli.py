"""The ``chatmemory`` command line."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime
from typing import Literal, TextIO

from chatmemory import _export, _migrate
from chatmemory._db import Database, create_engine, missing_file, resolve_url
from chatmemory.errors import ChatMemoryError, ConflictError, InvalidInputError
from chatmemory.memory import ChatMemory
from chatmemory.models import ConversationSummary
from chatmemory.principal import Principal
from chatmemory.scope import Scope

try:
    from chatmemory import _cli_render as render
except ModuleNotFoundError as missing:  # rich is the optional ``cli`` extra: plain lines without it
    if missing.name != "rich":
        raise
    from chatmemory import _cli_plain as render  # type: ignore[no-redef]

ENV_PRINCIPAL = "CHATMEMORY_PRINCIPAL"
_BROKEN_PIPE = 128 + 13  # the status of a process killed by SIGPIPE


def _url_option(parser: argparse.ArgumentParser, top: bool = False) -> None:
    parser.add_argument(
        "--url",
        default=None if top else argparse.SUPPRESS,
        help="database URL (default: $CHATMEMORY_URL, else the user data directory)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatmemory", description="The persisted record of AI conversations."
    )
    # The options every command shares go before the command or after it. A command's own
    # default would replace one given before it, so only this parser has defaults.
    _as_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the current version")
    _url_option(migrate)
    migrate.add_argument(
        "--sql",
        action="store_true",
        help="print the SQL instead of running it, without connecting: from an empty database, or "
        "from the revision --from names",
    )
    migrate.add_argument(
        "--from",
        dest="start",
        metavar="REVISION",
        help="with --sql: the revision the database is at (`chatmemory check` tells it)",
    )
    migrate.set_defaults(run=_migrate_command)

    check = commands.add_parser("check", help="exit 1 unless the database schema is current")
    _url_option(check)
    check.set_defaults(run=_check_command)
    _data_commands(commands)
    return parser


def _as_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    _url_option(parser, top)
    parser.add_argument(
        "--as",
        dest="principal",
        metavar="PRINCIPAL",
        default=default(os.environ.get(ENV_PRINCIPAL)),
        help=f"act as this principal (default: ${ENV_PRINCIPAL})",
    )
    parser.add_argument("--tenant", default=default(None), help="the principal's tenant")
    parser.add_argument(
        "--admin", action="store_true", default=default(False), help="act as an admin of the tenant"
    )


def _data_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ls = commands.add_parser("ls", help="list conversations")
    _as_options(ls)
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    which = ls.add_mutually_exclusive_group()
    which.add_argument("--archived", action="store_true", help="only archived conversations")
    which.add_argument("--all", action="store_true", help="archived ones too")
    ls.set_defaults(run=_ls_command)

    show = commands.add_parser("show", help="print a conversation's transcript, history by history")
    _as_options(show)
    show.add_argument("id", help="conversation id")
    show.set_defaults(run=_show_command)

    search = commands.add_parser("search", help="full-text search over messages")
    _as_options(search)
    search.add_argument("query", help='words, "a phrase", or a prefix*')
    search.add_argument("--conversation", help="only in this conversation")
    search.add_argument("--role", choices=["system", "user", "assistant", "tool"])
    search.add_argument("--limit", type=int, default=20, help="at most this many hits (default 20)")
    search.set_defaults(run=_search_command)

    export = commands.add_parser("export", help="write conversations as JSON Lines")
    _as_options(export)
    export.add_argument("ids", nargs="*", metavar="ID", help="conversation ids")
    export.add_argument("--all", action="store_true", help="every conversation the principal sees")
    export.add_argument("-o", "--output", help="file to write (default: standard output)")
    export.set_defaults(run=_export_command)

    load = commands.add_parser("import", help="read conversations from a JSON Lines file")
    _as_options(load)
    load.add_argument("file", help="a file written by `chatmemory export` (- for standard input)")
    load.add_argument("--owner", help="import for this owner (admin only; default: the principal)")
    load.add_argument("--new-ids", action="store_true", help="give everything fresh ids (import a copy)")
    load.set_defaults(run=_import_command)

    purge = commands.add_parser("purge", help="hard-delete soft-deleted data (admin)")
    _as_options(purge)
    purge.add_argument(
        "--deleted-before",
        required=True,
        metavar="DATE",
        help="ISO date or time (UTC unless it has an offset)",
    )
    purge.set_defaults(run=_purge_command)


async def _migrate_command(args: argparse.Namespace) -> int:
    if args.sql:
        sys.stdout.write(_migrate.offline_sql(args.url, start=args.start))
        return 0
    if args.start is not None:
        raise InvalidInputError("from", "only goes with --sql")
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
    current = None  # a SQLite file not there yet is empty, and a check does not create it
    if not missing_file(args.url):
        db = Database(create_engine(args.url))
        try:
            current = await _migrate.current_revision(db)
        finally:
            await db.engine.dispose()
    head = _migrate.head_revision()
    if current == head:
        print(f"schema is current ({head})")
        return 0
    _migrate.refuse_unknown(current, "chatmemory migrate")
    print(f"schema is at {current or 'empty'}, needs {head}: run `chatmemory migrate`", file=sys.stderr)
    return 1


@asynccontextmanager
async def _scope(args: argparse.Namespace, *, migrate: bool = False) -> AsyncIterator[Scope]:
    if not args.principal:
        raise InvalidInputError("principal", f"none given: pass --as NAME or set ${ENV_PRINCIPAL}")
    principal = Principal(args.principal, tenant=args.tenant, admin=args.admin)
    async with ChatMemory.open(args.url, migrate=migrate) as memory:
        yield memory.scoped(principal)


async def _ls_command(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise InvalidInputError("--limit", "must be a positive integer")
    archived = None if args.all else bool(args.archived)
    async with _scope(args) as scope:
        items: list[ConversationSummary] = []
        cursor = None
        while len(items) < args.limit:
            page = await scope.list_conversations(
                limit=min(args.limit - len(items), 100), cursor=cursor, archived=archived
            )
            items += page.items
            if not page.has_more:
                break
            cursor = page.next_cursor
    render.conversations(items)
    return 0


async def _show_command(args: argparse.Namespace) -> int:
    async with _scope(args) as scope:
        detail = await scope.get_conversation(args.id, messages=True)
    render.transcript(detail)
    return 0


async def _search_command(args: argparse.Namespace) -> int:
    async with _scope(args) as scope:
        page = await scope.search_messages(
            args.query, conversation_id=args.conversation, role=args.role, limit=args.limit
        )
    render.hits(page.items)
    return 0


async def _export_command(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        raise InvalidInputError("ids", "give conversation ids or --all")
    count = 0
    async with _scope(args) as scope:
        documents = scope.export_conversations() if args.all else _each(scope, args.ids)
        with _output(args.output) as out:
            async for document in documents:
                out.write(_export.dump_line(document))
                count += 1
    print(f"exported {_count(count, 'conversation')}", file=sys.stderr)
    return 0


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """Standard output, or a new file that takes the place of ``path`` only once all is written,
    so an export that fails leaves what was there."""
    if path is None:
        yield sys.stdout
        return
    target = os.path.abspath(path)
    if os.path.exists(target) and not os.path.isfile(target):  # a device or a pipe: written as it goes
        with _open(path, "w") as out:
            yield out
        return
    try:
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".chatmemory-", suffix=".jsonl")
    except OSError as exc:
        raise InvalidInputError("output", f"{path}: {exc.strerror}") from None
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # what open() would have made, not mkstemp's owner-only mode
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yield out
        try:
            os.replace(temporary, target)
        except OSError as exc:
            raise InvalidInputError("output", f"{path}: {exc.strerror}") from None
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)


async def _each(scope: Scope, ids: list[str]) -> AsyncIterator[dict[str, object]]:
    for cid in ids:
        yield await scope.export_conversation(cid)


async def _import_command(args: argparse.Namespace) -> int:
    stream = _stdin() if args.file == "-" else _open(args.file, "r")
    size = None if args.file == "-" else os.fstat(stream.fileno()).st_size
    imported = messages = 0
    failed: list[tuple[int, str]] = []
    try:
        async with _scope(args, migrate=True) as scope:
            with render.progress(size) as advance:
                for number, document, error in _export.read_lines(_counted(stream, advance)):
                    if document is not None:
                        try:
                            await scope.import_conversation(document, owner=args.owner, new_ids=args.new_ids)
                        except ConflictError as exc:
                            # The store names its Python argument; here the same choice is a flag.
                            error = str(exc).replace("new_ids=True", "--new-ids")
                        except ChatMemoryError as exc:
                            error = str(exc)
                        else:
                            imported += 1
                            messages += sum(len(h.get("messages", [])) for h in document["histories"])
                    if error is not None:
                        failed.append((number, error))
                        render.problem(f"line {number}: {error}")
    finally:
        if stream is not sys.stdin:
            stream.close()
    print(
        f"imported {_count(imported, 'conversation')} ({_count(messages, 'message')}); {len(failed)} failed",
        file=sys.stderr,
    )
    return 1 if failed else 0


def _open(path: str, mode: Literal["r", "w"]) -> TextIO:
    # Commands run as the only task of their event loop, so plain blocking file access is fine.
    # Bytes that are not UTF-8 are read as lone surrogates, which fail only the line they are on.
    try:
        return open(path, mode, encoding="utf-8", errors=_UNDECODABLE if mode == "r" else "strict")
    except OSError as exc:
        raise InvalidInputError("file", f"{path}: {exc.strerror}") from None


_UNDECODABLE = "surrogateescape"


def _stdin() -> TextIO:
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(encoding="utf-8", errors=_UNDECODABLE)
    return sys.stdin


def _counted(lines: Iterable[str], advance: Callable[[int], None]) -> Iterator[str]:
    for line in lines:
        advance(len(line.encode("utf-8", _UNDECODABLE)))
        yield line


async def _purge_command(args: argparse.Namespace) -> int:
    before = _when(args.deleted_before)
    async with _scope(args) as scope:
        counts = await scope.purge_deleted(deleted_before=before)
    print(
        f"purged {_count(counts.conversations, 'conversation')}, "
        f"{_count(counts.histories, 'history', 'histories')} and {_count(counts.messages, 'message')} "
        f"deleted before {before.isoformat()}"
    )
    return 0


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError("--deleted-before", "must be an ISO date or time, e.g. 2026-01-31") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(asyncio.run(args.run(args)))
    except ChatMemoryError as exc:
        print(f"chatmemory: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of the output went away (``| head``): stop quietly, as a shell tool killed by
        # SIGPIPE would, and keep the interpreter's last flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _BROKEN_PIPE


def _entry() -> None:
    raise SystemExit(main())
