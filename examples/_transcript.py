"""Printing stored conversations, shared by the example scripts: one line per message."""

from __future__ import annotations

import json
import textwrap

from chatmemory import (
    ConversationDetail,
    HistoryDetail,
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)

WIDTH = 100


def describe(message: Message, width: int = WIDTH) -> str:
    """A message on one line: its text, tool calls and results, media, and a status other than complete."""
    bits: list[str] = []
    for part in message.parts or [TextPart(text=message.content)]:
        if isinstance(part, TextPart):
            bits.append(part.text)
        elif isinstance(part, ToolCallPart):
            arguments = part.arguments if isinstance(part.arguments, str) else json.dumps(part.arguments)
            bits.append(f"→ {part.name}({arguments})")
        elif isinstance(part, ToolResultPart):
            bits.append(f"← {part.content}" + (" (tool error)" if part.is_error else ""))
        elif isinstance(part, ReasoningPart):
            bits.append(f"(thinking: {part.text})")
        else:
            bits.append(f"[{part.type}: {part.url or part.media_type}]")
    if message.status == "pending":
        bits.append("[pending]")
    elif message.status == "error":
        bits.append(f"[failed: {message.error}]")
    return textwrap.shorten(" ".join(b for b in bits if b), width, placeholder=" …")


def message_line(message: Message) -> str:
    """``seq``, role, the model that produced it (assistant messages only) and the message."""
    return f"  {message.seq:>3} {message.role:<9} {message.model or '':<20} {describe(message)}"


def history_header(number: int, history: HistoryDetail) -> str:
    """A run's model, status, system prompts, usage and error."""
    line = f"run {number}  model={history.model}  {history.status}"
    if history.system_prompts:
        line += f"  system={textwrap.shorten(' | '.join(history.system_prompts), 60)!r}"
    counts = {k: v for k, v in (history.usage or {}).items() if v}  # offline fakes count no tokens
    if counts:
        line += "  usage=" + ",".join(f"{k}:{v}" for k, v in counts.items())
    if history.error:
        line += f"  error={history.error!r}"
    return line


def print_conversation(detail: ConversationDetail) -> None:
    """A conversation fetched with ``messages=True``: its title and flags, then each run and its messages."""
    flags = [name for name, on in (("pinned", detail.pinned), ("archived", detail.archived)) if on]
    suffix = f"  ({', '.join(flags)})" if flags else ""
    print(f"{detail.title or '(untitled)'}  [{detail.id}]  owner={detail.owner_id}{suffix}")
    for number, history in enumerate(detail.histories, 1):
        print(history_header(number, history))
        for message in history.messages or ():
            print(message_line(message))
