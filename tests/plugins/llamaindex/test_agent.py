"""A LlamaIndex ``FunctionAgent`` remembering through chatmemory, with an offline mock LLM.

Run 1 (model ``mock-A``) calls a tool; run 2 resumes the conversation through a new store
on a newly opened ``ChatMemory`` with another model (``mock-B``). Both memory kinds are
driven: ``ChatMemoryBuffer`` over ``ChatMemoryChatStore`` and ``Memory`` over
``ChatMemoryDBChatStore``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.llms import ChatMessage
from llama_index.core.memory import ChatMemoryBuffer, Memory

from chatmemory import ChatMemory, ImagePart, Principal, TextPart, ToolCallPart, ToolResultPart
from chatmemory.recording import recorder_metadata
from tests.plugins.llamaindex._llm import NamedMockLLM, add

# llama-index-workflows finds an agent's steps with inspect.getmembers, which reads every
# deprecated pydantic attribute of the agent model (``__fields__``, ``model_computed_fields``...).
pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]


def agent_memory(kind: str, memory: ChatMemory) -> tuple[Any, ChatMemoryChatStore | ChatMemoryDBChatStore]:
    chat = memory.scoped(Principal("alice"))
    if kind == "buffer":
        store = ChatMemoryChatStore(chat, metadata={"app": "calc"})
        return ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="trip"), store
    db_store = ChatMemoryDBChatStore(chat, metadata={"app": "calc"})
    return Memory.from_defaults(session_id="trip", chat_store=db_store), db_store


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_runs_are_recorded_with_their_models_and_resumed(kind: str, db_url: str) -> None:
    question = ChatMessage(
        role="user",
        blocks=[TextBlock(text="please add 2 and 3"), ImageBlock(url="https://example.com/sum.png")],
    )
    async with ChatMemory.open(db_url) as memory:
        remembered, store = agent_memory(kind, memory)
        first = FunctionAgent(tools=[add], llm=NamedMockLLM("mock-A"), system_prompt="You add.")
        assert str(await first.run(user_msg=question, memory=remembered)) == "2+3=5"
        store.close()

    async with ChatMemory.open(db_url) as memory:
        remembered, store = agent_memory(kind, memory)
        llm = NamedMockLLM("mock-B")
        second = FunctionAgent(tools=[add], llm=llm, system_prompt="Echo.")
        assert str(await second.run(user_msg="again", memory=remembered)) == "saw 6 messages"
        # The resumed run sent the whole stored conversation, the question's image included.
        sent = llm.seen[-1]
        assert [m.role.value for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
        assert sent[1] == question

        alice = memory.scoped(Principal("alice"))
        (conversation,) = (await alice.list_conversations()).items
        detail = await alice.get_conversation(conversation.id, messages=True)
        store.close()

    one, two = detail.histories
    assert (one.model, one.system_prompts, one.status) == ("mock-A", ["You add."], "completed")
    assert (two.model, two.system_prompts) == ("mock-B", ["Echo."])
    # Each history names the LlamaIndex workflow run it records (the run's span id).
    runs = [h.metadata.pop("llamaindex_run") for h in (one, two)]
    assert all(run.startswith("FunctionAgent.run-") for run in runs) and runs[0] != runs[1]
    assert one.metadata == two.metadata == {"framework": "llamaindex", "app": "calc", **recorder_metadata()}
    recorded = [(m.role, m.model) for m in one.messages or []]
    assert recorded == [("user", None), ("assistant", "mock-A"), ("tool", None), ("assistant", "mock-A")]
    user, call, result, answer = one.messages or []
    assert user.parts == [TextPart(text="please add 2 and 3"), ImagePart(url="https://example.com/sum.png")]
    assert call.parts == [ToolCallPart(id="call-1", name="add", arguments={"a": 2, "b": 3})]
    assert result.parts == [ToolResultPart(call_id="call-1", content="5")]
    assert answer.content == "2+3=5"
    assert [(m.role, m.model, m.content) for m in two.messages or []] == [
        ("user", None, "again"),
        ("assistant", "mock-B", "saw 6 messages"),
    ]


async def test_chat_history_given_to_a_run_replaces_the_conversation(db_url: str) -> None:
    async with ChatMemory.open(db_url) as memory:
        remembered, store = agent_memory("buffer", memory)
        agent = FunctionAgent(tools=[add], llm=NamedMockLLM("mock-A"), system_prompt="Echo.")
        await agent.run(user_msg="first", memory=remembered)
        history = [ChatMessage(role="user", content="imported"), ChatMessage(role="assistant", content="ok")]
        assert (
            str(await agent.run(user_msg="next", chat_history=history, memory=remembered)) == "saw 4 messages"
        )

        assert [m.content for m in await store.aget_messages("trip")] == [
            "imported",
            "ok",
            "next",
            "saw 4 messages",
        ]
        store.close()


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_agents_on_threads_with_loops_of_their_own_share_one_store(
    kind: str, memory: ChatMemory
) -> None:
    """One store object serving agent runs on several threads, each thread running its own
    event loop (``asyncio.run``), as a thread pool of request handlers does."""
    chat = memory.scoped(Principal("alice"))
    store = ChatMemoryChatStore(chat) if kind == "buffer" else ChatMemoryDBChatStore(chat)
    threads = 4

    def handler(n: int) -> tuple[str, str]:
        async def two_runs() -> tuple[str, str]:
            remembered: Any = (
                ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key=f"k{n}")
                if kind == "buffer"
                else Memory.from_defaults(session_id=f"k{n}", chat_store=store)
            )
            agent = FunctionAgent(tools=[add], llm=NamedMockLLM(f"mock-{n}"), system_prompt="You add.")
            first = await agent.run(user_msg="please add 2 and 3", memory=remembered)
            second = await agent.run(user_msg="again", memory=remembered)
            return str(first), str(second)

        return asyncio.run(asyncio.wait_for(two_runs(), 60))

    try:
        with ThreadPoolExecutor(threads) as pool:
            answers = await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(pool.submit(handler, n)) for n in range(threads))), 120
            )
        assert answers == [("2+3=5", "saw 6 messages")] * threads
        summaries = (await chat.list_conversations()).items
        assert len(summaries) == threads
        for summary in summaries:
            n = summary.metadata["llamaindex_key"].removeprefix("k")
            histories = (await chat.get_conversation(summary.id)).histories
            assert [h.model for h in histories] == [f"mock-{n}", f"mock-{n}"]
    finally:
        store.close()
