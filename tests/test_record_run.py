"""``Scope.record_run``: a whole run in one transaction, on both backends."""

from __future__ import annotations

import pytest

from chatmemory import ConversationNotFound, InvalidInputError
from chatmemory.scope import Scope

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
