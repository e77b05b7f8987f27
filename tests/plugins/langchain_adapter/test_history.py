"""ChatMemoryHistory: a conversation as a legacy BaseChatMessageHistory.

The add and read behaviour is checked against langchain-core's own
``InMemoryChatMessageHistory``, as langchain-ai/langchain
``libs/core/tests/unit_tests/chat_history/test_chat_history.py`` drives a history
(``add_message``, ``add_messages``, ``aadd_messages``, ``aget_messages``, ``aclear``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from chatmemory_langchain import BackgroundLoop, ChatMemoryHistory
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableFieldSpec, RunnableConfig, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from chatmemory import ChatMemory, ConversationNotFound, InvalidInputError, Principal
from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import fake
from tests.plugins.langchain_adapter._helpers import SYSTEM, agent, histories, rows, user

# LangChain deprecates RunnableWithMessageHistory (a LangChainDeprecationWarning when it is
# created); this module tests exactly that legacy path.
pytestmark = pytest.mark.filterwarnings("ignore::langchain_core._api.deprecation.LangChainDeprecationWarning")

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Be brief."), MessagesPlaceholder("history"), ("human", "{question}")]
)


async def test_a_legacy_chain_records_each_invocation_as_a_history(alice: Scope) -> None:
    conv = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conv.id, model="fake-a")
    model = fake("Hello!", "Still here.")
    chain = RunnableWithMessageHistory(
        PROMPT | model,
        lambda session_id: history,
        input_messages_key="question",
        history_messages_key="history",
    )
    session: RunnableConfig = {"configurable": {"session_id": str(conv.id)}}
    await chain.ainvoke({"question": "Hi"}, session)
    await chain.ainvoke({"question": "Still there?"}, session)

    assert [m.text for m in model.seen[1]] == ["Be brief.", "Hi", "Hello!", "Still there?"]
    first, second = await histories(alice, conv.id)
    assert (first.model, first.status, second.status) == ("fake-a", "completed", "completed")
    assert rows(first.messages) == [("user", None, "Hi"), ("assistant", "fake-a", "Hello!")]
    assert [m.text for m in await history.aget_messages()] == ["Hi", "Hello!", "Still there?", "Still here."]

    await history.aclear()
    assert await history.aget_messages() == []
    assert await histories(alice, conv.id) == []


async def test_the_sync_methods_work_from_another_thread(alice: Scope) -> None:
    conv = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conv.id, model="fake-a")
    said = [HumanMessage("Hi", id="h-1"), AIMessage("Hello!", id="a-1")]
    await asyncio.to_thread(history.add_messages, said)
    assert await asyncio.to_thread(lambda: history.messages) == said
    await asyncio.to_thread(history.clear)
    assert await history.aget_messages() == []


async def test_another_principal_cannot_read_or_write_the_history(alice: Scope, bob: Scope) -> None:
    conv = await alice.start_conversation()
    await ChatMemoryHistory(alice, conv.id, model="fake-a").aadd_messages([HumanMessage("mine")])
    snooping = ChatMemoryHistory(bob, conv.id, model="fake-a")
    with pytest.raises(ConversationNotFound):
        await snooping.aget_messages()
    with pytest.raises(ConversationNotFound):
        await snooping.aadd_messages([HumanMessage("yours now")])
    assert [m.content for m in await alice.transcript(conv.id)] == ["mine"]


async def test_messages_sharing_an_id_are_all_added_like_the_in_memory_history(alice: Scope) -> None:
    conv = await alice.start_conversation()
    ours = ChatMemoryHistory(alice, conv.id, model="fake-a")
    theirs = InMemoryChatMessageHistory()
    batches: list[list[BaseMessage]] = [
        [HumanMessage("Hello", id="same"), HumanMessage("World", id="same")],
        [HumanMessage("Hello", id="same")],
    ]
    for batch in batches:
        await ours.aadd_messages(batch)
        await theirs.aadd_messages(batch)
    await asyncio.to_thread(ours.add_message, AIMessage("!", id="same"))
    theirs.add_message(AIMessage("!", id="same"))

    assert await ours.aget_messages() == await theirs.aget_messages()
    assert [m.text for m in await ours.aget_messages()] == ["Hello", "World", "Hello", "!"]


async def test_an_agent_continuing_a_legacy_chains_conversation_stores_nothing_twice(alice: Scope) -> None:
    """``RunnableWithMessageHistory`` gives the history its input without a LangChain ``id``; an
    agent then resuming the conversation must see those messages once and store them never."""
    conv = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conv.id, model="fake-a")
    chain = RunnableWithMessageHistory(
        PROMPT | fake("Hello!"),
        lambda session_id: history,
        input_messages_key="question",
        history_messages_key="history",
    )
    await chain.ainvoke({"question": "Hi"}, {"configurable": {"session_id": str(conv.id)}})
    model = fake("Still here.", "Yes.", name="fake-b")
    graph = agent(alice, conv.id, model)
    await graph.ainvoke(user("Still there?"))
    await graph.ainvoke(user("Sure?"))

    assert [m.text for m in model.seen[1]] == [SYSTEM, "Hi", "Hello!", "Still there?", "Still here.", "Sure?"]
    assert [(h.model, rows(h.messages)) for h in await histories(alice, conv.id)] == [
        ("fake-a", [("user", None, "Hi"), ("assistant", "fake-a", "Hello!")]),
        ("fake-b", [("user", None, "Still there?"), ("assistant", "fake-b", "Still here.")]),
        ("fake-b", [("user", None, "Sure?"), ("assistant", "fake-b", "Yes.")]),
    ]


async def test_a_history_factory_keyed_by_user_and_conversation(memory: ChatMemory) -> None:
    """After ``test_using_custom_config_specs`` (langchain-ai/langchain
    ``libs/core/tests/unit_tests/runnables/test_history.py``): the factory gets ``user_id`` and
    ``conversation_id`` from the config, and each user reaches only their own conversations."""

    def echo(params: dict[str, Any]) -> list[BaseMessage]:
        said = [str(m.content) for m in params["messages"] if isinstance(m, HumanMessage)]
        return [AIMessage(content="you said: " + "\n".join(said))]

    def history_for(user_id: str, conversation_id: str) -> ChatMemoryHistory:
        return ChatMemoryHistory(memory.scoped(Principal(user_id)), conversation_id, model="echo")

    chain = RunnableWithMessageHistory(
        RunnableLambda(echo),
        get_session_history=history_for,
        input_messages_key="messages",
        history_factory_config=[
            ConfigurableFieldSpec(id="user_id", annotation=str, name="User ID", default="", is_shared=True),
            ConfigurableFieldSpec(
                id="conversation_id", annotation=str, name="Conversation ID", default="", is_shared=True
            ),
        ],
    )
    alice, bob = memory.scoped(Principal("alice")), memory.scoped(Principal("bob"))
    conv = await alice.start_conversation()
    config: RunnableConfig = {"configurable": {"user_id": "alice", "conversation_id": str(conv.id)}}
    await chain.ainvoke({"messages": [HumanMessage("hello")]}, config)
    reply = await chain.ainvoke({"messages": [HumanMessage("goodbye")]}, config)
    assert reply == [AIMessage(content="you said: hello\ngoodbye")]

    snooping: RunnableConfig = {"configurable": {"user_id": "bob", "conversation_id": str(conv.id)}}
    with pytest.raises(ConversationNotFound):
        await chain.ainvoke({"messages": [HumanMessage("let me in")]}, snooping)
    assert [m.content for m in await alice.transcript(conv.id)] == [
        "hello",
        "you said: hello",
        "goodbye",
        "you said: hello\ngoodbye",
    ]
    assert (await bob.list_conversations()).items == []


async def test_a_streamed_reply_is_recorded_as_the_assistants(alice: Scope) -> None:
    # Streaming a chain gives its reply back as the chunks added up (an AIMessageChunk),
    # which RunnableWithMessageHistory stores as it is.
    conv = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conv.id, model="fake-a")
    chain = RunnableWithMessageHistory(
        PROMPT | fake("Hello there!"),
        lambda session_id: history,
        input_messages_key="question",
        history_messages_key="history",
    )
    session: RunnableConfig = {"configurable": {"session_id": str(conv.id)}}
    async for _ in chain.astream({"question": "Hi"}, session):
        pass

    (run,) = await histories(alice, conv.id)
    assert rows(run.messages) == [("user", None, "Hi"), ("assistant", "fake-a", "Hello there!")]
    assert [type(m) for m in await history.aget_messages()] == [HumanMessage, AIMessageChunk]


async def test_more_messages_than_one_append_holds_are_added_like_the_in_memory_history(
    alice: Scope,
) -> None:
    conv = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conv.id, model="fake-a")
    reference = InMemoryChatMessageHistory()
    many: list[BaseMessage] = [
        HumanMessage(f"q{i}") if i % 2 == 0 else AIMessage(f"a{i}") for i in range(1_500)
    ]
    reference.add_messages(many)

    await history.aadd_messages(many)

    assert [m.text for m in await history.aget_messages()] == [m.text for m in reference.messages]
    (run,) = await histories(alice, conv.id)
    assert (run.status, len(run.messages or [])) == ("completed", 1_500)


async def test_a_long_add_refused_part_way_adds_nothing(
    alice: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    conv = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conv.id, model="fake-a")
    append = alice.append_messages

    async def refusing(history_id: Any, messages: Any) -> Any:
        raise InvalidInputError("messages.0.content", "refused")

    monkeypatch.setattr(alice, "append_messages", refusing)
    with pytest.raises(InvalidInputError, match="refused"):
        await history.aadd_messages([HumanMessage(f"q{i}") for i in range(1_500)])
    monkeypatch.setattr(alice, "append_messages", append)

    assert await history.aget_messages() == []
    assert await histories(alice, conv.id) == []


async def _cancel_once_the_first_part_committed(
    chat: Scope, history: ChatMemoryHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Add 1,200 messages (three parts) through ``history`` and cancel the caller once the first
    part committed, its answer not back yet; the caller ends cancelled."""
    start_run = chat.start_run
    committed = threading.Event()  # set on the history's home loop, whichever that is

    async def slow_to_answer(*args: Any, **kwargs: Any) -> Any:
        started = await start_run(*args, **kwargs)
        committed.set()
        await asyncio.sleep(0.2)  # the answer on its way back
        return started

    monkeypatch.setattr(chat, "start_run", slow_to_answer)
    adding = asyncio.ensure_future(history.aadd_messages([HumanMessage(f"q{i}") for i in range(1_200)]))
    await asyncio.to_thread(committed.wait, 10)
    adding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await adding


async def test_a_long_add_cancelled_after_its_first_part_committed_is_added_whole(
    alice: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that comes once the first part is stored (its store call committed, its answer
    not back yet) waits for the rest, as a cancel during one store call waits for its commit:
    all of it or nothing, never the first part alone."""
    conv = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conv.id, model="fake-a")
    await _cancel_once_the_first_part_committed(alice, history, monkeypatch)

    (run,) = await histories(alice, conv.id)
    assert (run.status, len(run.messages or [])) == ("completed", 1_200)


async def test_a_long_add_cancelled_on_another_loop_than_its_home_is_added_whole_before_the_cancel_goes_on(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history's home is a background loop, the caller's loop another: cancelled once the
    first part is stored, the caller still waits for the rest, so a shutdown right after (the
    store closed) cannot leave the first part alone, ``running``."""
    memory = await ChatMemory.open(db_url)
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    home = BackgroundLoop()
    history = ChatMemoryHistory(alice, conv.id, model="fake-a", loop=home)
    await _cancel_once_the_first_part_committed(alice, history, monkeypatch)
    await memory.close()  # the usual shutdown: tasks cancelled and awaited, then the store closed
    history.close()
    home.close()

    async with ChatMemory.open(db_url) as reopened:
        (run,) = await histories(reopened.scoped(Principal("alice")), conv.id)
    assert (run.status, len(run.messages or [])) == ("completed", 1_200)


async def test_an_add_cancelled_before_its_busy_home_loop_started_it_is_dropped_at_once(alice: Scope) -> None:
    """Cancelled while its home loop is still busy with something else (it has not started the
    add), the caller does not wait for that loop: the add is dropped, nothing is stored."""
    conv = await alice.start_conversation()
    home = BackgroundLoop()
    history = ChatMemoryHistory(alice, conv.id, model="fake-a", loop=home)
    free = threading.Event()

    def busy() -> None:
        free.wait(10)

    home.loop.call_soon_threadsafe(busy)
    adding = asyncio.ensure_future(history.aadd_messages([HumanMessage("never")]))
    await asyncio.sleep(0.05)
    adding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await adding
    assert not free.is_set()  # the cancel went on while the home loop was still busy
    free.set()
    history.close()
    home.close()
    assert await histories(alice, conv.id) == []


async def test_its_framework_marker_stays_its_own(alice: Scope) -> None:
    conv = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conv.id, model="m", metadata={"framework": "my-app", "app": "rag"})
    await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])

    (run,) = await histories(alice, conv.id)
    assert ((run.metadata or {})["framework"], (run.metadata or {})["app"]) == ("langchain", "rag")
