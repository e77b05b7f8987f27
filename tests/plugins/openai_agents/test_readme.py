"""The README's snippets run as written, with the SDK's scripted model in place of the named one."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from agents.testing import assistant_message

from chatmemory import ChatMemory, Principal
from tests.plugins.openai_agents._support import NamedModel
from tests.readme_snippets import as_coroutine_function, python_blocks

README = "plugins/chatmemory-openai-agents/README.md"


async def test_session_snippets_record_three_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the snippet opens sqlite:///chat.db
    session_block, streaming_block = python_blocks(README)
    assert 'model="gpt-4.1"' in session_block
    offline = session_block.replace('model="gpt-4.1"', "model=model")
    # The streaming snippet goes on where the first one ends, inside its `async with`.
    module = as_coroutine_function(offline + textwrap.indent(streaming_block, "    "))
    replies = [[assistant_message(text)] for text in ("Lisbon.", "Oslo.", "The fjords.")]
    namespace: dict[str, Any] = {"model": NamedModel("gpt-4.1", replies)}
    exec(module, namespace)

    await namespace["snippet"]()

    async with ChatMemory.open("sqlite:///chat.db") as memory:
        chat = memory.scoped(Principal("alice"))
        (conversation,) = (await chat.list_conversations()).items
        detail = await chat.get_conversation(conversation.id)
        assert [(h.model, h.status, h.system_prompts) for h in detail.histories] == [
            ("gpt-4.1", "completed", ["Be brief."])
        ] * 3
        stored = [(m.role, m.content) for m in await chat.transcript(conversation.id)]
    assert stored == [
        ("user", "Where should I go in May?"),
        ("assistant", "Lisbon."),
        ("user", "And in June?"),
        ("assistant", "Oslo."),
        ("user", "Tell me more."),
        ("assistant", "The fjords."),
    ]
