"""One ChatMemoryMiddleware reads its conversation whole once, then only what was stored since,
and still sees every change other writers make at the newest end."""

from __future__ import annotations

import pytest
from chatmemory_langchain import ChatMemoryMiddleware
from langchain.agents import create_agent

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
