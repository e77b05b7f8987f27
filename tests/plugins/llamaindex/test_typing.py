"""The stores' constructors as a type checker sees them, with pydantic's mypy plugin (the
project's own settings): the documented ``ChatMemoryChatStore(chat)`` type-checks, and wrong
arguments do not. The plugin gives a pydantic model without an ``__init__`` of its own one made
of its fields, keyword-only, which refused ``chat`` given positionally.

mypy runs in a process of its own: run in the test's, it left more than half a million objects behind
for the garbage collector to walk in every later test of that worker (the suite's ``gc.collect()``
calls then took seconds each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_USES = """
from chatmemory import ChatMemory, Principal
from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore


def stores(memory: ChatMemory) -> None:
    chat = memory.scoped(Principal("alice"))
    ChatMemoryChatStore(chat)
    ChatMemoryDBChatStore(chat, model="gpt-4.1", metadata={"app": "demo"})
    ChatMemoryChatStore(chat, model=3)
    ChatMemoryDBChatStore()
"""


def test_the_documented_constructors_type_check_and_wrong_arguments_do_not(tmp_path: Path) -> None:
    uses = tmp_path / "uses.py"
    uses.write_text(_USES)
    root = Path(__file__).parents[3]
    mypy = [sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml"), str(uses)]
    done = subprocess.run(mypy, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    out, err, status = done.stdout, done.stderr, done.returncode
    errors = [line.split(": error: ")[1] for line in out.splitlines() if ": error: " in line]
    assert status == 1, out + err
    assert len(errors) == 2, out
    assert '"model" to "ChatMemoryChatStore" has incompatible type "int"' in errors[0]
    assert 'Missing positional argument "chat"' in errors[1]
