"""The README's snippets run as written, with the SDK's scripted model in place of the named one."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from agents.testing import assistant_message

from tests.plugins.openai_agents._support import NamedModel
from tests.readme_snippets import python_blocks, run_as_coroutine, stored_conversation

README = "plugins/chatmemory-openai-agents/README.md"


async def test_session_snippets_record_three_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the snippet opens sqlite:///chat.db
    session_block, streaming_block = python_blocks(README)
    assert 'model="gpt-4.1"' in session_block
    offline = session_block.replace('model="gpt-4.1"', "model=model")
    # The streaming snippet goes on where the first one ends, inside its `async with`.
    replies = [[assistant_message(text)] for text in ("Lisbon.", "Oslo.", "The fjords.")]
    block = offline + textwrap.indent(streaming_block, "    ")
    await run_as_coroutine(block, model=NamedModel("gpt-4.1", replies))

    detail, stored = await stored_conversation()
    assert [(h.model, h.status, h.system_prompts) for h in detail.histories] == [
        ("gpt-4.1", "completed", ["Be brief."])
    ] * 3
    assert stored == [
        ("user", "Where should I go in May?"),
        ("assistant", "Lisbon."),
        ("user", "And in June?"),
        ("assistant", "Oslo."),
        ("user", "Tell me more."),
        ("assistant", "The fjords."),
    ]
