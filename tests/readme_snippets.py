"""The code blocks of a README, to run them as a reader pastes them."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from chatmemory import ChatMemory, ConversationDetail, Principal

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(readme: str) -> list[str]:
    """The ```python blocks of ``readme`` (a path from the repository root), in order."""
    text = (ROOT / readme).read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def as_coroutine_function(block: str, name: str = "snippet") -> str:
    """A block written as notebook code (top-level ``async with``/``await``) as a module that
    defines ``async def name()``: its imports and definitions stay at module level, the rest
    becomes the function's body."""
    head, found, body = block.partition("\nasync with")
    assert found, "the block has no top-level `async with`"
    return f"{head}\n\nasync def {name}() -> None:\n{textwrap.indent('async with' + body, '    ')}"


async def run_as_coroutine(block: str, **names: Any) -> None:
    """Run ``block`` (see ``as_coroutine_function``) with ``names`` defined beside it (the
    offline models a test puts in place of the named ones)."""
    namespace: dict[str, Any] = dict(names)
    exec(as_coroutine_function(block), namespace)
    await namespace["snippet"]()


async def stored_conversation(
    owner: str = "alice", *, messages: bool = False
) -> tuple[ConversationDetail, list[tuple[str, str]]]:
    """The one conversation of ``owner`` a snippet stored in ``chat.db`` (in the working
    directory): its detail, and its transcript as (role, content) pairs."""
    async with ChatMemory.open("sqlite:///chat.db") as memory:
        chat = memory.scoped(Principal(owner))
        (conversation,) = (await chat.list_conversations()).items
        detail = await chat.get_conversation(conversation.id, messages=messages)
        transcript = await chat.transcript(conversation.id)
    return detail, [(m.role, m.content) for m in transcript]
