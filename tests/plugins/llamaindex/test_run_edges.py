"""Agent runs at their edges: replies holding values with no JSON form, and a run that
stopped before its reply (told from the next by LlamaIndex's instrumentation: each workflow
run is a span)."""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Sequence
from typing import Any

import pytest
from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.llms import ChatMessage
from llama_index.core.memory import ChatMemoryBuffer, Memory
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step

from chatmemory import NewMessage
from chatmemory.recording import recorder_metadata
from chatmemory.scope import Scope
from tests.plugins.llamaindex._llm import NamedMockLLM, add

pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]


class ProviderObject:
    """Something a provider integration leaves in ``additional_kwargs`` that has no JSON form."""

    def __repr__(self) -> str:
        return "<ProviderObject>"


class RawReplies(NamedMockLLM):
    """Replies carrying provider data in ``additional_kwargs``, or raising while ``down``."""

    down: bool = False

    def _respond(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        if self.down:
            raise RuntimeError("the provider is down")
        reply = super()._respond(messages, **kwargs)
        reply.additional_kwargs["raw"] = ProviderObject()
        reply.additional_kwargs["created"] = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
        return reply


def remembering(kind: str, alice: Scope) -> tuple[Any, ChatMemoryChatStore | ChatMemoryDBChatStore]:
    if kind == "buffer":
        store = ChatMemoryChatStore(alice)
        return ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="k"), store
    db_store = ChatMemoryDBChatStore(alice)
    return Memory.from_defaults(session_id="k", chat_store=db_store), db_store


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_replies_holding_values_with_no_json_form_are_all_stored(alice: Scope, kind: str) -> None:
    remembered, store = remembering(kind, alice)
    agent = FunctionAgent(tools=[add], llm=RawReplies("mock-A"), system_prompt="You add.")
    assert str(await agent.run(user_msg="please add 2 and 3", memory=remembered)) == "2+3=5"

    (conversation,) = (await alice.list_conversations()).items
    stored = await alice.transcript(conversation.id)
    assert [(m.role, m.model) for m in stored] == [
        ("user", None),
        ("assistant", "mock-A"),
        ("tool", None),
        ("assistant", "mock-A"),
    ]
    read = store.aget_messages("k") if isinstance(store, ChatMemoryChatStore) else store.get_messages("k")
    answer = (await read)[-1]
    assert answer.additional_kwargs == {"raw": "<ProviderObject>", "created": "2026-01-02T00:00:00Z"}
    store.close()


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_a_run_stopped_before_its_reply_is_not_merged_into_the_next(alice: Scope, kind: str) -> None:
    remembered, store = remembering(kind, alice)
    llm = RawReplies("mock-A", down=True)
    with pytest.raises(RuntimeError, match="the provider is down"):
        await FunctionAgent(tools=[add], llm=llm, system_prompt="S").run(user_msg="hello", memory=remembered)
    llm.down = False
    await FunctionAgent(tools=[add], llm=llm, system_prompt="S").run(user_msg="again", memory=remembered)

    (conversation,) = (await alice.list_conversations()).items
    histories = (await alice.get_conversation(conversation.id, messages=True)).histories
    contents = [[m.content for m in h.messages or []] for h in histories]
    assert contents == [["hello"], ["again", "saw 3 messages"]]
    # The first is closed as its run ended, by the second run's first write.
    stopped, later = histories
    assert (stopped.status, stopped.error) == ("failed", "RuntimeError: the provider is down")
    assert later.status == "running"  # until the next run (a chat store sees no run end)
    store.close()


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_runs_alternating_between_two_long_lived_store_objects_are_each_closed(
    alice: Scope, kind: str
) -> None:
    """Two handlers of one app, each holding a store object, taking turns on one key: each
    object's next run closes the run the other began since (it found its own closed by it),
    so only the latest run is left running, as with one object."""
    (first, first_store), (second, second_store) = remembering(kind, alice), remembering(kind, alice)
    for turn, remembered in enumerate([first, second, first, second, first]):
        agent = FunctionAgent(tools=[add], llm=NamedMockLLM("m"), system_prompt="S")
        await agent.run(user_msg=f"run {turn}", memory=remembered)

    (conversation,) = (await alice.list_conversations()).items
    histories = (await alice.get_conversation(conversation.id)).histories
    assert [h.status for h in histories] == ["completed"] * 4 + ["running"]
    first_store.close()
    second_store.close()


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_runs_of_two_store_objects_that_overlapped_once_are_each_closed_as_they_take_turns(
    alice: Scope, kind: str
) -> None:
    """Two requests at once (their runs overlap), then the two handlers take turns, then one
    goes on alone: every run but the latest is closed, as with one store object. (Found by a
    review script: each object kept closing only its own runs.)"""
    (first, first_store), (second, second_store) = remembering(kind, alice), remembering(kind, alice)
    both = asyncio.Barrier(2)

    async def slow_add(a: int, b: int) -> int:
        """Add two numbers."""
        await asyncio.wait_for(both.wait(), 30)
        return a + b

    def agent(name: str, tools: list[Any]) -> FunctionAgent:
        return FunctionAgent(tools=tools, llm=NamedMockLLM(name), system_prompt="S")

    waiting = FunctionTool.from_defaults(slow_add, name="add")
    started = asyncio.ensure_future(agent("A0", [waiting]).run(user_msg="add 2 and 3", memory=first))
    while both.n_waiting == 0:  # the first run waits in its tool: the second one starts now
        await asyncio.sleep(0.01)
    await asyncio.gather(started, agent("B0", [waiting]).run(user_msg="add 2 and 3", memory=second))
    for name, remembered in [("A1", first), ("B1", second), ("A2", first), ("B2", second), ("A3", first)]:
        await agent(name, [add]).run(user_msg=f"turn {name}", memory=remembered)
    for name in ("A4", "A5"):
        await agent(name, [add]).run(user_msg=f"turn {name}", memory=first)

    (conversation,) = (await alice.list_conversations()).items
    histories = (await alice.get_conversation(conversation.id)).histories
    assert [(h.model, h.status) for h in histories if h.status != "completed"] == [("A5", "running")]
    first_store.close()
    second_store.close()


async def test_a_run_another_live_process_is_recording_is_left_to_it(alice: Scope) -> None:
    """A store object whose last run another writer closed looks for runs left running, and
    closes those known to have ended; one whose process still runs elsewhere (here: this test's
    parent process, alive, named in the history as its recorder) goes on, not split in two."""
    store = ChatMemoryChatStore(alice)
    await store.async_add_message("k", ChatMessage(role="user", content="hi"))
    await store.async_add_message("k", ChatMessage(role="assistant", content="hello"))
    (conversation,) = (await alice.list_conversations()).items
    # The other process's first write closes this object's run and starts its own.
    (mine,) = (await alice.get_conversation(conversation.id)).histories
    await alice.finish_history(mine.id)
    elsewhere = await alice.start_history(
        conversation.id,
        model="other-process",
        metadata={"framework": "llamaindex", "host": recorder_metadata()["host"], "pid": os.getppid()},
    )
    await alice.append_messages(elsewhere.id, [NewMessage("user", "their question")])
    await store.async_add_message("k", ChatMessage(role="user", content="next"))

    histories = (await alice.get_conversation(conversation.id)).histories
    assert [(h.model, h.status) for h in histories] == [
        ("unknown", "completed"),
        ("other-process", "running"),
        ("unknown", "running"),
    ]
    store.close()


class _Waits(Workflow):
    """Writes a question to ``k1``, waits for ``gate``, then writes the answer."""

    def __init__(self, store: ChatMemoryChatStore, gate: asyncio.Event, tag: str) -> None:
        super().__init__(timeout=10)
        self.store, self.gate, self.tag = store, gate, tag

    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        await self.store.async_add_message("k1", ChatMessage(role="user", content=f"q {self.tag}"))
        await self.gate.wait()
        await self.store.async_add_message("k1", ChatMessage(role="assistant", content=f"r {self.tag}"))
        return StopEvent(result="ok")


class _TwoKeysThenFails(Workflow):
    def __init__(self, store: ChatMemoryChatStore) -> None:
        super().__init__(timeout=10)
        self.store = store

    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        await self.store.async_add_message("k1", ChatMessage(role="user", content="q in k1"))
        await self.store.async_add_message("k1", ChatMessage(role="assistant", content="answer in k1"))
        await self.store.async_add_message("k2", ChatMessage(role="assistant", content="note in k2"))
        raise RuntimeError("the provider is down")


async def test_a_failed_run_writing_two_keys_is_failed_in_both_whoever_closes_each(alice: Scope) -> None:
    """One workflow run writes two keys through one store object and fails; another store
    object closes its history of the first key. The second key's history is still closed
    ``failed`` with the run's error: how the run ended is kept until each of its histories is
    closed. (Before: the other object's close forgot it.)"""
    first, second = ChatMemoryChatStore(alice, model="A"), ChatMemoryChatStore(alice, model="B")
    await second.async_add_message("k1", ChatMessage(role="user", content="b0"))
    gate = asyncio.Event()
    waiting = asyncio.ensure_future(_Waits(first, gate, "A-run1").run())
    await asyncio.sleep(0.2)
    with pytest.raises(RuntimeError, match="provider is down"):
        await _TwoKeysThenFails(second).run()
    gate.set()
    await waiting
    done = asyncio.Event()
    done.set()
    await _Waits(first, done, "A-run2").run()  # sees the other's writes: closes its ended run in k1
    await second.async_add_message("k1", ChatMessage(role="user", content="b-next"))
    await second.async_add_message("k2", ChatMessage(role="user", content="b-note2"))

    by_key = {c.metadata["llamaindex_key"]: c.id for c in (await alice.list_conversations()).items}
    noted, _ = (await alice.get_conversation(by_key["k2"])).histories
    assert (noted.status, noted.error) == ("failed", "RuntimeError: the provider is down")
    first.close()
    second.close()
