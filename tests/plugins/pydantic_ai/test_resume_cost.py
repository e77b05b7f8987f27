"""An agent-level ChatMemoryCapability reads the whole conversation once, then only what was
stored since, and still sees every change made by other writers at the newest end, and a
pending message completed behind newer ones."""

from __future__ import annotations

import pytest
from chatmemory_pydantic_ai import ChatMemoryCapability, load_messages
from pydantic_ai import models
from pydantic_ai.messages import ModelMessage

from chatmemory import NewMessage
from chatmemory.scope import Scope
from tests.plugins._reads import count_reads
from tests.plugins.pydantic_ai._models import Script, adder

models.ALLOW_MODEL_REQUESTS = False


def _shape(messages: list[ModelMessage]) -> list[tuple[str, list[object]]]:
    """Each message's kind and its parts' content: messages other writers stored are rebuilt
    with new timestamps on each read."""
    return [(m.kind, [getattr(p, "content", None) for p in m.parts]) for m in messages]


async def test_later_runs_read_only_the_newest_end(alice: Scope, monkeypatch: pytest.MonkeyPatch) -> None:
    conv = await alice.start_conversation()
    seed = await alice.start_history(conv.id, model="seed")
    await alice.append_messages(
        seed.id, [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(200)]
    )
    await alice.finish_history(seed.id)
    script = Script("fn-A", tool=False)
    agent = adder(script.model, capabilities=[ChatMemoryCapability(alice, conv.id)])
    reads = count_reads(alice, monkeypatch)

    await agent.run("first")
    assert reads["full"] == 1
    reads.clear()
    for turn in range(3):
        await agent.run(f"turn {turn}")
    assert reads["full"] == 0
    assert reads["paged"] <= 3 * 60  # one newest-first page per run, however long the conversation
    assert len(script.received[-1]) == 200 + 4 * 2 - 1


async def test_other_writers_changes_at_the_newest_end_are_seen(alice: Scope) -> None:
    conv = await alice.start_conversation()
    script = Script("fn-A", tool=False)
    agent = adder(script.model, capabilities=[ChatMemoryCapability(alice, conv.id)])
    await agent.run("one")
    other = await alice.start_history(conv.id, model="elsewhere")
    await alice.append_messages(other.id, [{"role": "user", "content": "written elsewhere"}])
    await alice.finish_history(other.id)

    await agent.run("two")
    assert "written elsewhere" in str(script.received[-1])

    newest = (await alice.list_messages(conversation_id=conv.id, newest_first=True, limit=1)).items[0]
    await alice.delete_message(newest.id)
    await agent.run("three")
    assert newest.content not in str(script.received[-1])
    assert "written elsewhere" in str(script.received[-1])


async def test_histories_recorded_side_by_side_are_read_once(alice: Scope) -> None:
    conv = await alice.start_conversation()
    earlier = await alice.start_history(conv.id, model="one")
    later = await alice.start_history(conv.id, model="two")
    await alice.append_messages(later.id, [{"role": "user", "content": "later asks"}])
    await alice.append_messages(earlier.id, [{"role": "user", "content": "earlier asks"}])
    for history in (earlier, later):
        await alice.finish_history(history.id)
    script = Script("fn-A", tool=False)
    agent = adder(script.model, capabilities=[ChatMemoryCapability(alice, conv.id)])

    await agent.run("first")
    await agent.run("second")

    sent = str(script.received[-1])
    assert (sent.count("earlier asks"), sent.count("later asks")) == (1, 1)


async def test_runs_stored_side_by_side_after_a_read_resume_as_a_full_read_gives_them(alice: Scope) -> None:
    conv = await alice.start_conversation()
    script = Script("fn-A", tool=False)
    agent = adder(script.model, capabilities=[ChatMemoryCapability(alice, conv.id)])
    await agent.run("first")  # the capability has read the conversation

    one = await alice.start_history(conv.id, model="one")
    two = await alice.start_history(conv.id, model="two")
    for history, text in [(one, "one asks"), (two, "two asks"), (one, "one answers"), (two, "two answers")]:
        role = "user" if text.endswith("asks") else "assistant"
        await alice.append_messages(history.id, [{"role": role, "content": text}])
    fresh = Script("fn-A", tool=False)
    await adder(fresh.model).run("second", message_history=await load_messages(alice, conv.id))
    await agent.run("second")

    assert _shape(script.received[-1]) == _shape(fresh.received[-1])
    assert len(script.received[-1]) == 7  # first, its answer, each history's two messages, second


async def test_a_pending_message_completed_behind_newer_ones_is_resumed_as_a_full_read_gives_it(
    alice: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    conv = await alice.start_conversation()
    script = Script("fn-A", tool=False)
    agent = adder(script.model, capabilities=[ChatMemoryCapability(alice, conv.id)])
    await agent.run("one")
    # Another writer streams a reply into the conversation; something else is added after it.
    streaming = await alice.start_history(conv.id, model="other")
    (pending,) = await alice.append_messages(streaming.id, [NewMessage("assistant", "", status="pending")])
    noted = await alice.start_history(conv.id, model="other")
    await alice.append_messages(noted.id, [NewMessage("user", "a note")])
    await agent.run("two")
    await alice.complete_message(pending.id, content="the streamed reply")

    fresh = Script("fn-A", tool=False)
    await adder(fresh.model).run("three", message_history=await load_messages(alice, conv.id))
    reads = count_reads(alice, monkeypatch)
    await agent.run("three")
    assert "the streamed reply" in str(script.received[-1])
    assert _shape(script.received[-1]) == _shape(fresh.received[-1])
    assert reads["full"] == 1  # the completion changed nothing at the newest end
    reads.clear()
    await agent.run("four")  # nothing pending any more: back to the newest end only
    assert reads["full"] == 0
