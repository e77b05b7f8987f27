"""``Scope.record_run``: a whole run in one transaction, on both backends."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from chatmemory import ConversationNotFound, InvalidInputError
from chatmemory.scope import Scope
from tests.test_watch import take

RUN = [
    {"role": "user", "content": "hi", "key": "u1"},
    {"role": "assistant", "content": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {}}]},
    {"role": "tool", "content": [{"type": "tool_result", "call_id": "c1", "content": "ok"}]},
]


async def test_a_run_in_a_new_and_in_an_existing_conversation(alice: Scope) -> None:
    first = await alice.record_run(model="m", messages=RUN, title="T", usage={"input_tokens": 3})
    assert first.created
    assert (first.history.status, first.history.usage) == ("completed", {"input_tokens": 3})
    assert first.history.finished_at is not None
    assert [m.seq for m in first.messages] == [1, 2, 3]
    second = await alice.record_run(
        first.conversation_id, model="n", messages=RUN[:1], status="failed", error="x"
    )
    assert not second.created
    assert [m.seq for m in second.messages] == [4]
    detail = await alice.get_conversation(first.conversation_id, messages=True)
    assert (detail.title, detail.message_count) == ("T", 4)
    assert [(h.model, h.status) for h in detail.histories] == [("m", "completed"), ("n", "failed")]
    assert detail.histories[1].error == "x"


async def test_nothing_is_written_when_any_part_is_bad(alice: Scope, bob: Scope) -> None:
    existing = await alice.start_conversation("mine")
    bad = [*RUN, {"role": "robot", "content": "x"}]
    with pytest.raises(InvalidInputError):
        await alice.record_run(model="m", messages=bad, title="new")
    with pytest.raises(InvalidInputError):
        await alice.record_run(existing.id, model="m", messages=RUN, status="done")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        await alice.record_run(existing.id, model="m", messages=RUN, title="only for new ones")
    with pytest.raises(ConversationNotFound):
        await bob.record_run(existing.id, model="m", messages=RUN)
    assert [c.id for c in (await alice.list_conversations()).items] == [existing.id]
    assert (await alice.get_conversation(existing.id)).histories == []


async def test_a_run_without_messages_recorded_into_a_conversation(alice: Scope) -> None:
    """Only its history, stored as it answers it (on PostgreSQL one statement): the
    conversation's counters and preview stay, its time moves to the run's, and the change log
    holds the history's start and finish."""
    conversation = await alice.start_conversation()
    first = await alice.record_run(conversation.id, model="m", messages=RUN[:1])
    cursor = await alice.change_cursor(conversation.id)
    recorded = await alice.record_run(
        conversation.id, model="n", messages=[], status="cancelled", usage={"t": 0}, error="stopped"
    )
    assert recorded.messages == []
    stored = await alice.get_history(recorded.history.id)
    assert stored.model_dump(exclude={"messages"}) == recorded.history.model_dump()
    assert (stored.status, stored.usage, stored.error) == ("cancelled", {"t": 0}, "stopped")
    assert stored.messages == []
    summary = await alice.get_conversation(conversation.id)
    assert (summary.message_count, summary.last_message_preview) == (1, "hi")
    assert summary.updated_at == recorded.history.created_at > first.history.created_at
    async with aclosing(alice.watch(conversation.id, after=cursor)) as events:
        got = await take(events, 2)
    assert [e.kind for e in got] == ["history.started", "history.finished"]
    assert {e.history_id for e in got} == {recorded.history.id}
