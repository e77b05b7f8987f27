"""The README's snippet runs as written, with pydantic-ai's TestModel in place of the named model."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_ai.models.test import TestModel

from tests.readme_snippets import python_blocks, run_as_coroutine, stored_conversation

README = "plugins/chatmemory-pydantic-ai/README.md"
MODEL = '"openai:gpt-5"'


async def test_capability_snippet_records_three_runs_once_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the snippet opens sqlite:///chat.db
    (block,) = python_blocks(README)
    assert block.count(MODEL) == 1
    await run_as_coroutine(block.replace(MODEL, "model"), model=TestModel(custom_output_text="ok"))

    detail, stored = await stored_conversation()
    assert [(h.model, h.status, h.system_prompts) for h in detail.histories] == [
        ("test", "completed", ["Be terse."]),
        ("test", "completed", ["Be terse."]),
        ("test", "completed", ["Be terse."]),
    ]
    # The third run, whose run-level capability replaces the agent's, is recorded once.
    assert stored == [
        ("user", "What is 2+3?"),
        ("assistant", "ok"),
        ("user", "And times 4?"),
        ("assistant", "ok"),
        ("user", "Hi"),
        ("assistant", "ok"),
    ]
