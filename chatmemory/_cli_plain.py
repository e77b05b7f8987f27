"""What the command line prints as plain lines: when piped, and wherever ``rich`` (the
``cli`` extra) is not installed."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from chatmemory._search import MessageHit
from chatmemory.content import AudioPart, FilePart, ImagePart, ReasoningPart, ToolCallPart, ToolResultPart
from chatmemory.models import ConversationDetail, ConversationSummary, HistoryDetail, Message


def when(value: datetime | None) -> str:
    """A timestamp as the command line shows it."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def one_line(text: str) -> str:
    """``text`` with each run of whitespace (line breaks and tabs too) as one space: a cell of a
    line that holds one conversation or hit."""
    return " ".join(text.split())


def conversation_rows(items: Sequence[ConversationSummary]) -> list[tuple[str, ...]]:
    """The cells of each conversation's row."""
    return [
        (
            str(c.id),
            one_line(c.title or ""),
            str(c.message_count),
            when(c.updated_at),
            " ".join(flag for flag, on in (("pinned", c.pinned), ("archived", c.archived)) if on),
        )
        for c in items
    ]


def part_lines(message: Message) -> list[str]:
    """One line for each non-text part of ``message``."""
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


def history_header(history: HistoryDetail) -> str:
    """A history's one-line heading."""
    finished = f" -> {when(history.finished_at)}" if history.finished_at else ""
    started = when(history.created_at)
    return f"history {history.id} · model {history.model} · {history.status} · {started}{finished}"


def history_extras(history: HistoryDetail) -> list[str]:
    """A history's system prompts, usage and error, one line each."""
    extras = [f"system prompt: {p}" for p in history.system_prompts or ()]
    extras += [f"usage: {json.dumps(history.usage)}"] if history.usage else []
    extras += [f"error: {history.error}"] if history.error else []
    return [f"  {line}" for line in extras]


def conversation_heading(detail: ConversationDetail) -> tuple[str, str]:
    """A conversation's title line and its owner-and-times line."""
    return (
        f"{detail.title or '(untitled)'}  {detail.id}",
        f"owner {detail.owner_id} · created {when(detail.created_at)} · updated {when(detail.updated_at)}",
    )


def message_head(message: Message) -> list[str]:
    """The segments of a message's first line: position and time, role, model, status, body."""
    model = f" ({message.model})" if message.model else ""
    status = f" {message.status}" if message.status != "complete" else ""
    body = message.error if message.status == "error" and message.error else message.content
    return [f"[{message.seq}] {when(message.created_at)} ", message.role, model, status, f": {body}"]


def conversations(items: Sequence[ConversationSummary]) -> None:
    """Conversations, one tab-separated line each."""
    for row in conversation_rows(items):
        print("\t".join(row))


def transcript(detail: ConversationDetail) -> None:
    """A conversation's transcript grouped by history."""
    for line in conversation_heading(detail):
        print(line)
    for history in detail.histories:
        print()
        print(f"== {history_header(history)}")
        for line in history_extras(history):
            print(line)
        for message in history.messages or ():
            print("".join(message_head(message)) + "".join(f"\n    {line}" for line in part_lines(message)))


def hits(items: Sequence[MessageHit]) -> None:
    """Search hits: where each was found and its snippet."""
    for hit in items:
        print(f"{hit_place(hit)}\n    {one_line(hit.snippet)}")


def hit_place(hit: MessageHit) -> str:
    """Where a hit was found."""
    m = hit.message
    title = one_line(hit.conversation_title or "") or "(untitled)"
    return f"{title} {hit.conversation_id} [{m.seq}] {m.role} {when(m.created_at)}"


def problem(message: str) -> None:
    """A problem report on standard error."""
    print(message, file=sys.stderr)


@contextmanager
def progress(total: int | None) -> Iterator[Callable[[int], None]]:
    """No progress display; yields an ``advance`` that does nothing."""
    yield lambda n: None
