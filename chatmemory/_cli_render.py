"""What the command line prints: colours and layout on a terminal, plain lines when piped.

Needs ``rich`` (the ``cli`` extra); without it the command line uses ``_cli_plain`` alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table
from rich.text import Text

from chatmemory import _cli_plain as plain
from chatmemory._search import HIGHLIGHT_END, HIGHLIGHT_START, MessageHit
from chatmemory.models import ConversationDetail, ConversationSummary, Message

_ROLE_STYLE = {"system": "magenta", "user": "green", "assistant": "cyan", "tool": "yellow"}


def _out() -> Console:
    return Console(highlight=False)


def conversations(items: Sequence[ConversationSummary]) -> None:
    """A table of conversations."""
    console = _out()
    if not console.is_terminal:
        plain.conversations(items)
        return
    # The id is what `show` takes: whole, however narrow the terminal.
    id_column = Column("id", no_wrap=True, min_width=36)
    table = Table(id_column, "title", "messages", "updated", "", header_style="bold")
    rows = plain.conversation_rows(items)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table if rows else "no conversations")


def transcript(detail: ConversationDetail) -> None:
    """A conversation's transcript grouped by history, with models, statuses and times."""
    console = _out()
    if not console.is_terminal:
        plain.transcript(detail)
        return
    title, owner = plain.conversation_heading(detail)
    console.print(Text(title, style="bold"))
    console.print(Text(owner))  # stored text is never markup
    for history in detail.histories:
        console.print("")
        console.rule(Text(plain.history_header(history), style="bold blue"), align="left")
        for line in plain.history_extras(history):
            console.print(Text(line, style="dim"))
        for message in history.messages or ():
            console.print(_message_text(message))


def _message_text(message: Message) -> Text:
    where, role, model, status, body = plain.message_head(message)
    head = Text()
    head.append(where, style="dim")
    head.append(role, style=f"bold {_ROLE_STYLE[message.role]}")
    head.append(model, style="dim")
    head.append(status, style="bold red" if message.status == "error" else "bold yellow")
    head.append(body)
    for line in plain.part_lines(message):
        head.append(f"\n    {line}", style="italic")
    return head


def hits(items: Sequence[MessageHit]) -> None:
    """Search hits: where each was found and its highlighted snippet."""
    console = _out()
    if not console.is_terminal:
        plain.hits(items)
        return
    for hit in items:
        console.print(Text(plain.hit_place(hit), style="bold"))
        console.print(Text("    ").append(_highlighted(" ".join(hit.snippet.split()))))
    if not items:
        console.print("no matches")


def _highlighted(snippet: str) -> Text:
    text = Text()
    rest = snippet
    while HIGHLIGHT_START in rest:
        before, _, rest = rest.partition(HIGHLIGHT_START)
        match, _, rest = rest.partition(HIGHLIGHT_END)
        text.append(before)
        text.append(match, style="bold black on yellow")
    text.append(rest)
    return text


def problem(message: str) -> None:
    """A problem report on standard error."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(Text(message, style="red"))


@contextmanager
def progress(total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` bytes on a terminal (nothing when piped); yields ``advance``."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal or not sys.stderr.isatty(),
        transient=True,
    ) as bar:
        task = bar.add_task("import", total=total)
        yield lambda n: bar.advance(task, n)
