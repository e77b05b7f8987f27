"""What LlamaIndex's own stores (``SimpleChatStore``, ``SQLAlchemyChatStore``) take but the
store would refuse as it is: more messages in one store call than one append takes, and
models with names longer than the store keeps. These stores take them too."""

from __future__ import annotations

from typing import Any

import pytest
from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.llms import ChatMessage
from llama_index.core.memory import ChatMemoryBuffer, Memory
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.storage.chat_store.base_db import MessageStatus

from chatmemory import ChatMemory, InvalidInputError, Limits, Principal
from chatmemory.scope import Scope
from tests.plugins.llamaindex._llm import NamedMockLLM, add
from tests.plugins.llamaindex.conftest import StoreCalls

MANY = 1_500  # over the store's default of 1,000 messages per append call


def turn(count: int, start: int = 0) -> list[ChatMessage]:
    """One run of ``count`` messages: a user message, then the agent's."""
    return [
        ChatMessage(role="user" if i == start else "assistant", content=f"m{i}")
        for i in range(start, start + count)
    ]


def texts(messages: list[ChatMessage]) -> list[str | None]:
    return [m.content for m in messages]


async def test_set_messages_takes_more_than_one_append_holds(calls: StoreCalls) -> None:
    messages = turn(MANY)
    simple = SimpleChatStore()
    simple.set_messages("k", messages)

    await calls("set_messages", "k", messages)

    assert texts(await calls("get_messages", "k")) == texts(simple.get_messages("k"))
    assert len(await calls("get_messages", "k")) == MANY


async def test_a_long_key_takes_an_insertion(calls: StoreCalls, alice: Scope) -> None:
    await calls("set_messages", "k", turn(MANY))

    await calls("add_message", "k", ChatMessage(role="user", content="first"), 0)

    stored = await calls("get_messages", "k")
    assert texts(stored[:2]) == ["first", "m0"]
    assert len(stored) == MANY + 1
    # Recorded as one finished history, as any insertion is.
    (conversation,) = (await alice.list_conversations()).items
    (history,) = (await alice.get_conversation(conversation.id)).histories
    assert history.status == "completed"


async def test_add_messages_takes_more_than_one_append_holds(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("k", turn(MANY))

    assert texts(await db_store.get_messages("k")) == [f"m{i}" for i in range(MANY)]


async def test_add_messages_to_a_running_run_takes_more_than_one_append_holds(
    db_store: ChatMemoryDBChatStore, alice: Scope
) -> None:
    await db_store.add_messages("k", turn(2))
    await db_store.add_messages("k", [ChatMessage(role="assistant", content=f"m{i}") for i in range(2, MANY)])

    assert texts(await db_store.get_messages("k")) == [f"m{i}" for i in range(MANY)]
    (conversation,) = (await alice.list_conversations()).items
    (history,) = (await alice.get_conversation(conversation.id)).histories
    assert history.status == "running"


async def test_set_and_archive_more_than_one_append_holds(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.set_messages("k", turn(MANY))
    await db_store.add_messages("k", turn(2, MANY), status=MessageStatus.ARCHIVED)

    archived = await db_store.get_messages("k", status=MessageStatus.ARCHIVED)
    assert texts(archived) == [f"m{MANY}", f"m{MANY + 1}"]
    assert await db_store.count_messages("k") == MANY


async def test_a_long_set_refused_part_way_leaves_the_key_as_it_was(
    store: ChatMemoryChatStore, alice: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.aset_messages("k", turn(2))
    append = alice.append_messages
    appends = 0

    async def refusing_the_second(history_id: Any, messages: Any) -> Any:
        nonlocal appends
        appends += 1
        if appends == 2:
            raise InvalidInputError("messages.0.content", "refused")
        return await append(history_id, messages)

    monkeypatch.setattr(alice, "append_messages", refusing_the_second)
    with pytest.raises(InvalidInputError, match="refused"):
        await store.aset_messages("k", turn(MANY))

    assert appends == 2
    assert texts(await store.aget_messages("k")) == ["m0", "m1"]
    (conversation,) = (await alice.list_conversations()).items
    assert len((await alice.get_conversation(conversation.id)).histories) == 1


# A model served from a long local path (vLLM serves a model under the path it was loaded from).
LONG_MODEL = "/mnt/models/hub/" + "/".join(["org--" + "a" * 90, "snapshots", "b" * 80, "Llama-3.1-8B"])
LABEL = LONG_MODEL[:99] + "…" + LONG_MODEL[-100:]


@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211")
@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_a_model_name_longer_than_the_store_takes_is_recorded_shortened(
    kind: str, alice: Scope
) -> None:
    if kind == "buffer":
        store: ChatMemoryChatStore | ChatMemoryDBChatStore = ChatMemoryChatStore(alice)
        remembered: Any = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="k")
    else:
        store = ChatMemoryDBChatStore(alice)
        remembered = Memory.from_defaults(session_id="k", chat_store=store)
    agent = FunctionAgent(tools=[add], llm=NamedMockLLM(LONG_MODEL), system_prompt="You add.")
    try:
        assert str(await agent.run(user_msg="please add 2 and 3", memory=remembered)) == "2+3=5"
    finally:
        store.close()

    (conversation,) = (await alice.list_conversations()).items
    (history,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert (history.model, len(LABEL)) == (LABEL, 200)
    assert {m.model for m in history.messages or [] if m.role == "assistant"} == {LABEL}


async def test_writes_fit_a_lower_cap_on_messages_per_call(db_url: str) -> None:
    async with ChatMemory.open(db_url, limits=Limits(messages_per_call=10)) as memory:
        store = ChatMemoryDBChatStore(memory.scoped(Principal("alice")))
        try:
            await store.set_messages("k", turn(25))
            await store.add_messages(
                "k", [ChatMessage(role="assistant", content=f"m{i}") for i in range(25, 50)]
            )
            assert texts(await store.get_messages("k")) == [f"m{i}" for i in range(50)]
        finally:
            store.close()
