"""ChatMemoryMiddleware with messages the store refuses or cannot hold as they are, streams
closed early, and tools that edit the message list: the run's history always ends closed and
holds only messages."""

from __future__ import annotations

import datetime
from contextlib import aclosing
from typing import Annotated, Any

import pytest
from chatmemory_langchain import ChatMemoryHistory, from_stored
from langchain.agents.middleware import SummarizationMiddleware
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.types import Command

from chatmemory import ChatMemory, InvalidInputError, Limits, Principal
from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import call, fake
from tests.plugins.langchain_adapter._helpers import agent, histories, rows, user
from tests.unstorable import REFUSED, too_deep


@tool(response_format="content_and_artifact")
def read_page(url: str) -> tuple[str, dict[str, Any]]:
    """Fetch a page."""
    return "the page", too_deep()  # an artifact the store refuses


async def test_a_tool_result_the_store_refuses_fails_the_history_saying_why(alice: Scope) -> None:
    conv = await alice.start_conversation()
    graph = agent(
        alice,
        conv.id,
        fake(call("read_page", "c1", url="https://example.com"), "unreachable"),
        tools=[read_page],
    )
    with pytest.raises(InvalidInputError, match=REFUSED):
        await graph.ainvoke(user("Read it"))

    (run,) = await histories(alice, conv.id)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("messages not recorded: ")
    assert REFUSED in run.error
    assert rows(run.messages) == [("user", None, "Read it"), ("assistant", "fake-a", "")]


async def test_an_input_the_store_refuses_leaves_a_failed_history_and_calls_no_model(alice: Scope) -> None:
    conv = await alice.start_conversation()
    model = fake("unreachable")
    refused = HumanMessage("hello", additional_kwargs={"trace": too_deep()})
    with pytest.raises(InvalidInputError):
        await agent(alice, conv.id, model).ainvoke({"messages": [refused]})

    (run,) = await histories(alice, conv.id)
    assert (run.status, run.model, run.messages) == ("failed", "fake-a", [])
    assert run.error is not None
    assert run.error.startswith("messages not recorded: ")
    assert model.seen == []


async def test_a_tool_result_neither_backend_can_hold_as_text_is_recorded_with_replacements(
    alice: Scope,
) -> None:
    """A zip's first bytes read as text, a file name decoded with surrogateescape: no database
    column of text holds a NUL character or a lone surrogate; U+FFFD stands in for each, in both
    forms, and the run goes on."""

    @tool
    def read_file(path: str) -> str:
        """Read a file."""
        return "PK\x03\x04\x00\x00 caf\udce9.txt"

    conv = await alice.start_conversation()
    graph = agent(alice, conv.id, fake(call("read_file", "c1", path="a.zip"), "A zip."), tools=[read_file])
    out = await graph.ainvoke(user("What is it?"))
    assert out["messages"][-1].text == "A zip."

    (run,) = await histories(alice, conv.id)
    assert run.status == "completed"
    stored = (run.messages or [])[2]
    assert stored.content == "PK\x03\x04\ufffd\ufffd caf\ufffd.txt"
    reloaded = from_stored(stored)
    assert isinstance(reloaded, ToolMessage) and reloaded.content == stored.content


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


async def test_a_tool_artifact_that_is_not_json_is_stored_in_its_json_form(alice: Scope) -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)

    @tool(response_format="content_and_artifact")
    def search(query: str) -> tuple[str, dict[str, Any]]:
        """Search."""
        return "found", {"at": when, "raw": b"\x00\xff", "hit": Opaque()}

    conv = await alice.start_conversation()
    graph = agent(alice, conv.id, fake(call("search", "c1", query="q"), "Found it."), tools=[search])
    out = await graph.ainvoke(user("Search"))
    assert out["messages"][-1].text == "Found it."

    (run,) = await histories(alice, conv.id)
    assert run.status == "completed"
    assert [m.role for m in run.messages or []] == ["user", "assistant", "tool", "assistant"]
    result = from_stored((run.messages or [])[2])
    assert isinstance(result, ToolMessage)
    assert result.artifact == {"at": "2026-01-02T03:04:05Z", "raw": "AP8=", "hit": "<Opaque>"}


async def test_a_stream_closed_during_a_model_call_is_cancelled_saying_so(alice: Scope) -> None:
    conv = await alice.start_conversation()
    graph = agent(alice, conv.id, fake("A long answer, one word at a time, streamed out."))
    received = 0
    async with aclosing(graph.astream(user("Talk"), stream_mode="messages")) as stream:
        async for _ in stream:
            received += 1
            if received == 3:
                break  # the model node is still streaming: closing the stream cancels it

    (run,) = await histories(alice, conv.id)
    assert run.status == "cancelled"
    assert run.error == "CancelledError: the task running the agent was cancelled"
    assert rows(run.messages) == [("user", None, "Talk")]


async def test_a_tool_command_removing_messages_stores_no_message_for_the_removal(alice: Scope) -> None:
    @tool
    def start_over(tool_call_id: Annotated[str, InjectedToolCallId]) -> Command[Any]:
        """Forget the conversation so far."""
        return Command(
            update={
                "messages": [
                    RemoveMessage(id=REMOVE_ALL_MESSAGES),
                    HumanMessage("Let us start over."),
                    ToolMessage("forgotten", tool_call_id=tool_call_id),
                ]
            }
        )

    conv = await alice.start_conversation()
    graph = agent(alice, conv.id, fake(call("start_over", "c1"), "Fresh start."), tools=[start_over])
    out = await graph.ainvoke(user("Forget it all"))
    assert [m.text for m in out["messages"]] == ["Let us start over.", "forgotten", "Fresh start."]

    (run,) = await histories(alice, conv.id)
    assert rows(run.messages) == [
        ("user", None, "Forget it all"),
        ("assistant", "fake-a", ""),
        ("user", None, "Let us start over."),
        ("tool", None, "forgotten"),
        ("assistant", "fake-a", "Fresh start."),
    ]


async def test_a_summary_put_in_place_of_the_conversation_is_not_stored_as_user_input(alice: Scope) -> None:
    conv = await alice.start_conversation()
    summarizer = FakeListChatModel(responses=["They said hello twice."])
    summarizing = SummarizationMiddleware(summarizer, trigger=("messages", 4), keep=("messages", 2))
    await agent(alice, conv.id, fake("a1"), before=[summarizing]).ainvoke(user("q1"))
    await agent(alice, conv.id, fake("a2"), before=[summarizing]).ainvoke(user("q2"))
    third = fake("a3")
    await agent(alice, conv.id, third, before=[summarizing]).ainvoke(user("q3"))
    assert [m.text for m in third.seen[0]][1].endswith("They said hello twice.")

    assert [rows(h.messages) for h in await histories(alice, conv.id)] == [
        [("user", None, "q1"), ("assistant", "fake-a", "a1")],
        [("user", None, "q2"), ("assistant", "fake-a", "a2")],
        [("user", None, "q3"), ("assistant", "fake-a", "a3")],
    ]
    # A later run resumes the conversation itself, and summarises it again.
    fourth = fake("a4")
    summarizer.responses = ["Three questions so far."]
    summarizer.i = 0
    await agent(alice, conv.id, fourth, before=[summarizing]).ainvoke(user("q4"))
    assert [m.text for m in fourth.seen[0]][1:] == [
        "Here is a summary of the conversation to date:\n\nThree questions so far.",
        "a3",
        "q4",
    ]


# A model served from a long local path (vLLM serves a model under the path it was loaded from).
LONG_MODEL = "/mnt/models/hub/" + "/".join(["org--" + "a" * 90, "snapshots", "b" * 80, "Llama-3.1-8B"])
LABEL = LONG_MODEL[:99] + "…" + LONG_MODEL[-100:]


async def test_a_model_name_longer_than_the_store_takes_is_recorded_shortened(alice: Scope) -> None:
    conv = await alice.start_conversation()
    graph = agent(alice, conv.id, fake(call("add", "c1", a=2, b=3), "5", name=LONG_MODEL))

    out = await graph.ainvoke(user("2+3?"))

    assert out["messages"][-1].text == "5"
    assert out["messages"][-1].response_metadata["model_name"] == LONG_MODEL
    (run,) = await histories(alice, conv.id)
    assert (run.model, run.status, len(LABEL)) == (LABEL, "completed", 200)
    assert [m.model for m in run.messages or [] if m.role == "assistant"] == [LABEL, LABEL]
    # The native form keeps the name the provider reported.
    assert from_stored((run.messages or [])[-1]).response_metadata["model_name"] == LONG_MODEL


async def test_a_legacy_history_driven_by_a_model_name_longer_than_the_store_takes(alice: Scope) -> None:
    conv = await alice.start_conversation()
    history = ChatMemoryHistory(alice, conv.id, model=LONG_MODEL)

    await history.aadd_messages([HumanMessage("Hi"), AIMessage("Hello!")])

    (run,) = await histories(alice, conv.id)
    assert (run.model, run.status) == (LABEL, "completed")


async def test_a_message_id_longer_than_a_key_is_recorded_once(alice: Scope) -> None:
    long_id = "msg-" + "x" * 400
    conv = await alice.start_conversation()
    graph = agent(alice, conv.id, fake("a1", "a2"))

    await graph.ainvoke(user("q1", message_id=long_id))
    await graph.ainvoke(user("q2"))

    first, second = await histories(alice, conv.id)
    assert rows(first.messages) == [("user", None, "q1"), ("assistant", "fake-a", "a1")]
    assert rows(second.messages) == [("user", None, "q2"), ("assistant", "fake-a", "a2")]
    assert from_stored((first.messages or [])[0]).id == long_id


@pytest.mark.parametrize("kept", [False, True], ids=["loaded", "checkpointed"])
async def test_a_message_with_an_empty_id_is_recorded_once(alice: Scope, kept: bool) -> None:
    conv = await alice.start_conversation()
    graph = agent(alice, conv.id, fake("a1", "a2"), checkpointer=InMemorySaver() if kept else None)
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}

    await graph.ainvoke(user("q1", message_id=""), thread)
    await graph.ainvoke(user("q2", message_id=""), thread)

    first, second = await histories(alice, conv.id)
    assert rows(first.messages) == [("user", None, "q1"), ("assistant", "fake-a", "a1")]
    assert rows(second.messages) == [("user", None, "q2"), ("assistant", "fake-a", "a2")]


async def test_a_long_tool_call_id(alice: Scope) -> None:
    conv = await alice.start_conversation()
    call_id = "call_" + "y" * 5_000
    graph = agent(alice, conv.id, fake(call("add", call_id, a=2, b=3), "5"))

    await graph.ainvoke(user("2+3?"))

    (run,) = await histories(alice, conv.id)
    assert run.status == "completed"
    assert [m.role for m in run.messages or []] == ["user", "assistant", "tool", "assistant"]


async def test_writes_fit_a_lower_cap_on_messages_per_call(db_url: str) -> None:
    async with ChatMemory.open(db_url, limits=Limits(messages_per_call=10)) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        many = [HumanMessage(f"q{i}") if i % 2 == 0 else AIMessage(f"a{i}") for i in range(25)]
        await ChatMemoryHistory(chat, conv.id, model="fake-a").aadd_messages(many)
        inputs: list[Any] = [{"role": m.type if m.type == "ai" else "user", "content": m.text} for m in many]
        await agent(chat, conv.id, fake("done")).ainvoke(
            {"messages": [*inputs, {"role": "user", "content": "q"}]}
        )

        legacy, run = await histories(chat, conv.id)
        assert (legacy.status, len(legacy.messages or [])) == ("completed", 25)
        assert (run.status, len(run.messages or [])) == ("completed", 27)


async def test_reads_fit_a_lower_cap_on_a_page(db_url: str) -> None:
    async with ChatMemory.open(db_url, limits=Limits(list_limit=5)) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        graph = agent(chat, conv.id, fake("a1", "a2", "a3"))
        for question in ("q1", "q2", "q3"):
            await graph.ainvoke(user(question))

        runs = await histories(chat, conv.id)
        assert [rows(run.messages) for run in runs] == [
            [("user", None, f"q{i}"), ("assistant", "fake-a", f"a{i}")] for i in (1, 2, 3)
        ]


async def test_a_run_failing_on_a_store_with_a_lower_content_limit(db_url: str) -> None:
    # The error a failed run records is cut to the store's content limit when that is lower than
    # the adapter's own cut (2,000 characters): the history is closed, not left running.
    @tool
    def explode(path: str) -> str:
        """Fail, saying much."""
        raise RuntimeError("boom " + "x" * 20_000)

    async with ChatMemory.open(db_url, limits=Limits(content=1_000)) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        graph = agent(chat, conv.id, fake(call("explode", "c1", path="a"), "?"), tools=[explode])
        with pytest.raises(RuntimeError, match="boom x"):
            await graph.ainvoke(user("Go."))
        (run,) = await histories(chat, conv.id)
        assert run.status == "failed"
        assert (
            run.error is not None and run.error.startswith("RuntimeError: boom x") and len(run.error) == 1_000
        )
