"""An agent on one long-lived chat store and memory gives the model what a new store gives it
when another writer completes a pending message behind newer ones: both stores read the
key's conversation whole on every read, so nothing read before is reused."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent

from chatmemory import ChatMemory, NewMessage, Principal
from tests.plugins.llamaindex._llm import NamedMockLLM, add
from tests.plugins.llamaindex.test_agent import agent_memory

pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]


async def _run(remembered: Any, llm: NamedMockLLM, text: str) -> None:
    await FunctionAgent(tools=[add], llm=llm, system_prompt="Echo.").run(user_msg=text, memory=remembered)


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_a_pending_message_completed_behind_newer_ones_reaches_the_model_as_a_new_store_gives_it(
    kind: str, memory: ChatMemory
) -> None:
    remembered, store = agent_memory(kind, memory)
    llm = NamedMockLLM("mock-A")
    await _run(remembered, llm, "one")
    chat = memory.scoped(Principal("alice"))
    (conversation,) = (await chat.list_conversations()).items
    # Another writer streams a reply into the conversation; something else is added after it.
    streaming = await chat.start_history(conversation.id, model="other")
    (pending,) = await chat.append_messages(streaming.id, [NewMessage("assistant", "", status="pending")])
    noted = await chat.start_history(conversation.id, model="other")
    await chat.append_messages(noted.id, [NewMessage("user", "a note")])
    await _run(remembered, llm, "two")
    await chat.complete_message(pending.id, content="the streamed reply")

    # What a new store and memory give the model, their own run taken out again.
    fresh_memory, fresh_store = agent_memory(kind, memory)
    fresh = NamedMockLLM("mock-A")
    await _run(fresh_memory, fresh, "three")
    await chat.delete_history((await chat.get_conversation(conversation.id)).histories[-1].id)
    await _run(remembered, llm, "three")
    contents = [m.content for m in llm.seen[-1]]
    assert contents[3:6] == ["the streamed reply", "a note", "two"]
    assert llm.seen[-1] == fresh.seen[-1]
    store.close()
    fresh_store.close()
