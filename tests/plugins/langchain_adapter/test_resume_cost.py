"""One ChatMemoryMiddleware reads its conversation whole once, then only what was stored since,
and still sees every change other writers make at the newest end, and a pending message
completed once read."""

from __future__ import annotations

import pytest
from chatmemory_langchain import ChatMemoryMiddleware
from langchain.agents import create_agent
from langchain_core.messages import BaseMessage

from chatmemory import NewMessage
from chatmemory.scope import Scope
from tests.plugins._reads import count_reads
from tests.plugins.langchain_adapter._fakes import fake
from tests.plugins.langchain_adapter._helpers import user


async def test_later_runs_read_only_the_newest_end(alice: Scope, monkeypatch: pytest.MonkeyPatch) -> None:
    conv = await alice.start_conversation()
    seed = await alice.start_history(conv.id, model="seed")
    await alice.append_messages(
        seed.id, [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(200)]
    )
    await alice.finish_history(seed.id)
    model = fake(*[f"answer {i}" for i in range(4)])
    graph = create_agent(model, [], middleware=[ChatMemoryMiddleware(alice, conv.id)])
    transcripts = 0
    transcript = alice.transcript

    async def counting_transcript(conversation_id: object) -> object:
        nonlocal transcripts
        transcripts += 1
        return await transcript(conversation_id)  # type: ignore[arg-type]

    monkeypatch.setattr(alice, "transcript", counting_transcript)
    reads = count_reads(alice, monkeypatch)

    await graph.ainvoke(user("first"))
    assert transcripts == 1
    for turn in range(3):
        await graph.ainvoke(user(f"turn {turn}"))
    assert transcripts == 1
    assert reads["paged"] <= 3 * 60
    assert len(model.seen[-1]) == 200 + 4 * 2 - 1


async def test_other_writers_changes_at_the_newest_end_are_seen(alice: Scope) -> None:
    conv = await alice.start_conversation()
    model = fake("one", "two", "three")
    graph = create_agent(model, [], middleware=[ChatMemoryMiddleware(alice, conv.id)])
    await graph.ainvoke(user("first"))
    other = await alice.start_history(conv.id, model="elsewhere")
    await alice.append_messages(other.id, [{"role": "user", "content": "written elsewhere"}])
    await alice.finish_history(other.id)

    await graph.ainvoke(user("second"))
    assert [m.text for m in model.seen[-1]] == ["first", "one", "written elsewhere", "second"]

    newest = (await alice.list_messages(conversation_id=conv.id, newest_first=True, limit=1)).items[0]
    await alice.delete_message(newest.id)
    await graph.ainvoke(user("third"))
    assert [m.text for m in model.seen[-1]] == ["first", "one", "written elsewhere", "second", "third"]


def _shape(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    return [(m.type, m.text) for m in messages]


@pytest.mark.parametrize("behind", [True, False], ids=["behind-newer", "newest"])
async def test_a_pending_message_completed_once_read_is_resumed_as_a_full_read_gives_it(
    alice: Scope, monkeypatch: pytest.MonkeyPatch, behind: bool
) -> None:
    conv = await alice.start_conversation()
    model = fake("one", "two", "three", "four")
    graph = create_agent(model, [], middleware=[ChatMemoryMiddleware(alice, conv.id)])
    await graph.ainvoke(user("first"))
    # Another writer streams a reply into the conversation; something else may be added after it.
    streaming = await alice.start_history(conv.id, model="other")
    (pending,) = await alice.append_messages(streaming.id, [NewMessage("assistant", "", status="pending")])
    if behind:
        noted = await alice.start_history(conv.id, model="other")
        await alice.append_messages(noted.id, [NewMessage("user", "a note")])
    await graph.ainvoke(user("second"))
    await alice.complete_message(pending.id, content="the streamed reply")

    # What a new middleware gives the model, its own run taken out again.
    fresh = fake("three")
    await create_agent(fresh, [], middleware=[ChatMemoryMiddleware(alice, conv.id)]).ainvoke(user("third"))
    await alice.delete_history((await alice.get_conversation(conv.id)).histories[-1].id)
    transcripts = 0
    transcript = alice.transcript

    async def counting_transcript(conversation_id: object) -> object:
        nonlocal transcripts
        transcripts += 1
        return await transcript(conversation_id)  # type: ignore[arg-type]

    monkeypatch.setattr(alice, "transcript", counting_transcript)
    await graph.ainvoke(user("third"))
    assert "the streamed reply" in [m.text for m in model.seen[-1]]
    assert _shape(model.seen[-1]) == _shape(fresh.seen[-1])
    assert transcripts == 1  # the completion changed nothing at the newest end
    await graph.ainvoke(user("fourth"))  # nothing pending any more: back to the newest end only
    assert transcripts == 1
