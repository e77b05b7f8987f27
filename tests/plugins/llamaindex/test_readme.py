"""The README's snippet runs as written, with an offline mock LLM in place of the OpenAI one."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatmemory import ChatMemory, Principal
from tests.plugins.llamaindex._llm import NamedMockLLM
from tests.readme_snippets import python_blocks, run_as_coroutine

README = "plugins/chatmemory-llamaindex/README.md"
IMPORT = "from llama_index.llms.openai import OpenAI  # or any LlamaIndex LLM that calls functions\n"
MODEL = 'OpenAI(model="gpt-4.1")'

# llama-index-workflows reads every deprecated pydantic attribute of the agent (see test_agent).
pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]


async def test_agent_snippet_records_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the snippet opens sqlite:///chat.db
    (block,) = python_blocks(README)
    assert block.count(IMPORT) == 1 and block.count(MODEL) == 1
    await run_as_coroutine(block.replace(IMPORT, "").replace(MODEL, "llm"), llm=NamedMockLLM("gpt-4.1"))

    async with ChatMemory.open("sqlite:///chat.db") as memory:
        chat = memory.scoped(Principal("alice"))
        listed = (await chat.list_conversations()).items
        by_key = {c.metadata["llamaindex_key"]: c.id for c in listed}
        assert sorted(by_key) == ["tour", "trip"]  # Memory's key and the buffer's
        for key, prompt in (("trip", "Plan a day in Rome"), ("tour", "Plan a day in Florence")):
            (history,) = (await chat.get_conversation(by_key[key], messages=True)).histories
            # A chat store is told of no run's end: the next user message closes this one (README).
            assert (history.model, history.status, history.system_prompts) == (
                "gpt-4.1",
                "running",
                ["Be brief."],
            )
            assert [(m.role, m.content) for m in history.messages or []] == [
                ("user", prompt),
                ("assistant", "saw 2 messages"),
            ]
