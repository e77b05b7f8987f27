"""The README's snippets run as written, with LangChain's offline fake in place of the named model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.langchain_adapter._fakes import call, fake
from tests.readme_snippets import python_blocks, run_as_coroutine, stored_conversation

README = "plugins/chatmemory-langchain/README.md"
MODEL = '"openai:gpt-4.1"'


def _offline(block: str, model: str) -> str:
    assert MODEL in block
    return block.replace(MODEL, model)


async def test_agent_snippet_records_two_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the snippet opens sqlite:///chat.db
    agent_block = python_blocks(README)[0]
    await run_as_coroutine(_offline(agent_block, "model"), model=fake(call("add", "c1", a=2, b=3), "5", "20"))

    detail, stored = await stored_conversation()
    assert [(h.model, h.status) for h in detail.histories] == [("fake-a", "completed")] * 2
    assert stored == [
        ("user", "2+3?"),
        ("assistant", ""),
        ("tool", "5"),
        ("assistant", "5"),
        ("user", "and times 4?"),
        ("assistant", "20"),
    ]


def test_background_loop_snippet_records_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    agent_block, sync_block = python_blocks(README)
    imports = agent_block.partition("\nasync with")[0]  # the sync snippet continues the first one
    namespace: dict[str, Any] = {"model": fake("Hello!")}
    exec(imports + "\n" + _offline(sync_block, "model"), namespace)

    _, stored = asyncio.run(stored_conversation())
    assert stored == [("user", "Hi"), ("assistant", "Hello!")]
