"""What the command line prints: colours and layout on a terminal, plain lines when piped."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from chatmemory._search import HIGHLIGHT_END, HIGHLIGHT_START, MessageHit
from chatmemory.content import AudioPart, FilePart, ImagePart, ReasoningPart, ToolCallPart, ToolResultPart
from chatmemory.models import ConversationDetail, ConversationSummary, HistoryDetail, Message

_ROLE_STYLE = {"system": "magenta", "user": "green", "assistant": "cyan", "tool": "yellow"}


def _out() -> Console:
    return Console(highlight=False)


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def conversations(items: Sequence[ConversationSummary]) -> None:
    """A table of conversations."""
    console = _out()
    rows = [
        (
            str(c.id),
            c.title or "",
            str(c.message_count),
            _time(c.updated_at),
            " ".join(flag for flag, on in (("pinned", c.pinned), ("archived", c.archived)) if on),
        )
        for c in items
    ]
    if not console.is_terminal:
        for row in rows:
            print("\t".join(row))
        return
    table = Table("id", "title", "messages", "updated", "", header_style="bold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table if rows else "no conversations")


def _part_lines(message: Message) -> list[str]:
    lines: list[str] = []
    for part in message.parts or ():
        if isinstance(part, ToolCallPart):
            arguments = part.arguments if isinstance(part.arguments, str) else json.dumps(part.arguments)
            lines.append(f"-> {part.name}({arguments}) [{part.id}]")
        elif isinstance(part, ToolResultPart):
            lines.append(f"<- result of {part.call_id}{' (error)' if part.is_error else ''}")
        elif isinstance(part, ReasoningPart):
            lines.append(f"(reasoning) {part.text}")
        elif isinstance(part, ImagePart | AudioPart | FilePart):
            source = part.url or f"{part.media_type}, {part.data_size} bytes inline"
            lines.append(f"[{part.type}: {source}]")
    return lines


def _history_header(history: HistoryDetail) -> str:
    finished = f" -> {_time(history.finished_at)}" if history.finished_at else ""
    started = _time(history.created_at)
    return f"history {history.id} · model {history.model} · {history.status} · {started}{finished}"


def transcript(detail: ConversationDetail) -> None:
    """A conversation's transcript grouped by history, with models, statuses and times."""
    console = _out()
    plain = not console.is_terminal
    emit: Callable[[Text | str], None] = (lambda t: print(str(t))) if plain else console.print
    emit(Text(f"{detail.title or '(untitled)'}  {detail.id}", style="bold"))
    emit(f"owner {detail.owner_id} · created {_time(detail.created_at)} · updated {_time(detail.updated_at)}")
    for history in detail.histories:
        emit("")
        if plain:
            emit(f"== {_history_header(history)}")
        else:
            console.rule(Text(_history_header(history), style="bold blue"), align="left")
        extras = [f"system prompt: {p}" for p in history.system_prompts or ()]
        extras += [f"usage: {json.dumps(history.usage)}"] if history.usage else []
        extras += [f"error: {history.error}"] if history.error else []
        for line in extras:
            emit(Text(f"  {line}", style="dim"))
        for message in history.messages or ():
            emit(_message_text(message))


def _message_text(message: Message) -> Text:
    head = Text()
    head.append(f"[{message.seq}] {_time(message.created_at)} ", style="dim")
    head.append(message.role, style=f"bold {_ROLE_STYLE[message.role]}")
    if message.model:
        head.append(f" ({message.model})", style="dim")
    if message.status != "complete":
        head.append(f" {message.status}", style="bold red" if message.status == "error" else "bold yellow")
    head.append(": ")
    head.append(message.error if message.status == "error" and message.error else message.content)
    for line in _part_lines(message):
        head.append(f"\n    {line}", style="italic")
    return head


def hits(items: Sequence[MessageHit]) -> None:
    """Search hits: where each was found and its highlighted snippet."""
    console = _out()
    for hit in items:
        m = hit.message
        title = hit.conversation_title or "(untitled)"
        where = f"{title} {hit.conversation_id} [{m.seq}] {m.role} {_time(m.created_at)}"
        snippet = " ".join(hit.snippet.split())
        if not console.is_terminal:
            print(f"{where}\n    {snippet}")
            continue
        console.print(Text(where, style="bold"))
        console.print(Text("    ").append(_highlighted(snippet)))
    if not items and console.is_terminal:
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
