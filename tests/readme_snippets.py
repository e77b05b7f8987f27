"""The code blocks of a README, to run them as a reader pastes them."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

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
