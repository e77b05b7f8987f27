"""``Scope.record_run``: a whole run in one transaction, on both backends."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import aclosing
from typing import Any

import asyncpg
import pytest
from sqlalchemy import make_url

from chatmemory import ChatMemory, ConversationNotFound, InvalidInputError, Principal
from chatmemory import _sql as sql
from chatmemory._postgres_driver import connect_options
from chatmemory.scope import Scope
from tests.test_watch import nothing_more, take

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


KEYED = [
    {"role": "user", "content": "Find me a hotel in Rome", "key": "t1-user"},
    {"role": "assistant", "content": "Hotel Artemide.", "key": "t1-assistant"},
]


async def test_a_keyed_run_sent_again_is_answered_and_not_recorded_twice(alice: Scope) -> None:
    """A call re-sent after its answer was lost (into a conversation, every message keyed)
    writes nothing: not a history, not a message, not a change; it answers the stored run."""
    conversation = await alice.start_conversation()
    first = await alice.record_run(conversation.id, model="m", messages=KEYED, once=True, usage={"t": 1})
    assert not first.resent
    cursor = await alice.change_cursor(conversation.id)
    again = await alice.record_run(conversation.id, model="m", messages=KEYED, once=True, usage={"t": 1})
    assert again.resent and not again.created
    assert again.conversation_id == conversation.id
    assert again.history == first.history
    assert again.messages == first.messages
    detail = await alice.get_conversation(conversation.id, messages=True)
    assert detail.message_count == 2
    assert [h.id for h in detail.histories] == [first.history.id]
    async with aclosing(alice.watch(conversation.id, after=cursor)) as events:
        await nothing_more(events)


async def test_without_once_each_call_records_a_run_of_its_own(alice: Scope) -> None:
    """As the adapters record: a framework's message sent again is a message of its own."""
    conversation = await alice.start_conversation()
    first = await alice.record_run(conversation.id, model="m", messages=KEYED)
    second = await alice.record_run(conversation.id, model="m", messages=KEYED)
    assert not second.resent
    assert second.history.id != first.history.id
    assert (await alice.get_conversation(conversation.id)).message_count == 4


async def test_a_keyed_run_sent_many_times_at_once_is_recorded_once(alice: Scope) -> None:
    conversation = await alice.start_conversation()
    runs = await asyncio.gather(
        *(alice.record_run(conversation.id, model="m", messages=KEYED, once=True) for _ in range(8))
    )
    assert sum(not r.resent for r in runs) == 1
    assert len({r.history.id for r in runs}) == 1
    detail = await alice.get_conversation(conversation.id, messages=True)
    assert (detail.message_count, len(detail.histories)) == (2, 1)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"model": "other"}, id="another model"),
        pytest.param({"status": "failed"}, id="another status"),
        pytest.param({"messages": [KEYED[0], {**KEYED[1], "content": "Hotel Raphael."}]}, id="another text"),
        pytest.param({"messages": [KEYED[0], {**KEYED[1], "role": "user"}]}, id="another role"),
        pytest.param({"messages": KEYED[:1]}, id="fewer messages"),
        pytest.param({"messages": [*KEYED, {"role": "user", "content": "More?", "key": "t2"}]}, id="more"),
        pytest.param({"messages": KEYED[::-1]}, id="another order"),
        pytest.param(
            {"messages": [KEYED[0], {"role": "assistant", "content": "Hotel Artemide."}]}, id="a key left out"
        ),
    ],
)
async def test_a_run_that_differs_from_the_one_stored_is_recorded_as_a_run_of_its_own(
    alice: Scope, change: dict[str, Any]
) -> None:
    conversation = await alice.start_conversation()
    first = await alice.record_run(conversation.id, model="m", messages=KEYED, once=True)
    call: dict[str, Any] = {"model": "m", "messages": KEYED, "once": True, **change}
    other = await alice.record_run(conversation.id, **call)
    assert not other.resent
    assert other.history.id != first.history.id
    assert [m.content for m in other.messages] == [m["content"] for m in call["messages"]]
    detail = await alice.get_conversation(conversation.id)
    assert [h.id for h in detail.histories] == [first.history.id, other.history.id]


TOOL_RUN = [
    {"role": "user", "content": "Weather in Rome and Oslo?", "key": "w-user"},
    {
        "role": "assistant",
        "content": [{"type": "tool_call", "id": "c1", "name": "weather", "arguments": {"city": "Rome"}}],
        "key": "w-call",
    },
    {
        "role": "tool",
        "content": [{"type": "tool_result", "call_id": "c1", "content": "sunny"}],
        "key": "w-result",
    },
]


def _with_call(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    call = {"type": "tool_call", "id": "c1", "name": "weather", "arguments": arguments}
    return [TOOL_RUN[0], {**TOOL_RUN[1], "content": [call]}, TOOL_RUN[2]]


async def test_a_run_of_parts_is_compared_by_its_parts_not_only_their_text(alice: Scope) -> None:
    """A tool call has no text: a run that differs from the stored one only in a call's arguments
    (or in parts whose text is the same) is a run of its own, not the stored one sent again."""
    conversation = await alice.start_conversation()
    first = await alice.record_run(conversation.id, model="m", messages=TOOL_RUN, once=True)
    again = await alice.record_run(conversation.id, model="m", messages=TOOL_RUN, once=True)
    assert (again.resent, again.history, again.messages) == (True, first.history, first.messages)
    oslo = _with_call({"city": "Oslo"})
    other = await alice.record_run(conversation.id, model="m", messages=oslo, once=True)
    assert not other.resent and other.history.id != first.history.id
    parts = other.messages[1].parts or []
    assert [p.model_dump(exclude_none=True) for p in parts] == oslo[1]["content"]
    halves = [{"type": "text", "text": "Find me a hotel"}, {"type": "text", "text": "in Rome"}]
    split = [{**KEYED[0], "content": halves}]
    joined = [{**KEYED[0], "content": "Find me a hotel\nin Rome"}]
    text = await alice.record_run(conversation.id, model="m", messages=joined, once=True)
    in_parts = await alice.record_run(conversation.id, model="m", messages=split, once=True)
    assert not text.resent and not in_parts.resent
    detail = await alice.get_conversation(conversation.id)
    assert len(detail.histories) == 4


async def test_a_run_whose_history_or_message_was_deleted_is_recorded_again(alice: Scope) -> None:
    conversation = await alice.start_conversation()
    first = await alice.record_run(conversation.id, model="m", messages=KEYED, once=True)
    await alice.delete_message(first.messages[1].id)
    second = await alice.record_run(conversation.id, model="m", messages=KEYED, once=True)
    assert not second.resent
    await alice.delete_history(second.history.id)
    third = await alice.record_run(conversation.id, model="m", messages=KEYED, once=True)
    assert not third.resent
    assert len({first.history.id, second.history.id, third.history.id}) == 3
    fourth = await alice.record_run(conversation.id, model="m", messages=KEYED, once=True)
    assert (fourth.resent, fourth.history) == (True, third.history)


async def test_a_keyed_run_without_a_conversation_starts_one_each_time(alice: Scope) -> None:
    """Nothing names where the first call went: each call is a new conversation."""
    first = await alice.record_run(model="m", messages=KEYED, once=True, title="T")
    second = await alice.record_run(model="m", messages=KEYED, once=True, title="T")
    assert (first.created, second.created, second.resent) == (True, True, False)
    assert first.conversation_id != second.conversation_id


async def test_another_users_run_is_never_found(alice: Scope, bob: Scope) -> None:
    conversation = await alice.start_conversation()
    await alice.record_run(conversation.id, model="m", messages=KEYED, once=True)
    with pytest.raises(ConversationNotFound):
        await bob.record_run(conversation.id, model="m", messages=KEYED, once=True)
    mine = await bob.start_conversation()
    theirs = await bob.record_run(mine.id, model="m", messages=KEYED, once=True)
    assert not theirs.resent
    assert (await alice.get_conversation(conversation.id)).message_count == 2


def _index_conditions(plan: Any) -> list[str]:
    """The index conditions of every node of a PostgreSQL plan (``EXPLAIN (FORMAT JSON)``) that
    reads the key index."""
    found = []
    if "key" in plan.get("Index Name", ""):
        found.append(plan.get("Index Cond", ""))
    for child in plan.get("Plans", []):
        found += _index_conditions(child)
    return found


async def test_a_run_is_looked_for_by_one_probe_of_the_key_index_per_history(
    memory: ChatMemory, db_url: str, backend: str
) -> None:
    """Each probe names its history: on tables not yet analyzed PostgreSQL planned an EXISTS as a
    join that read the whole key index for every history of the conversation (125 ms for 2,000
    runs, where the probes take 1.6 ms)."""
    alice = memory.scoped(Principal("alice"))
    conversation = await alice.start_conversation()
    for n in range(200):
        keyed = [{"role": "user", "content": f"q{n}", "key": f"u{n}"}]
        await alice.record_run(conversation.id, model="m", messages=keyed)
    params = {"cid": conversation.id, "model": "m", "status": "completed", "key": "absent"}
    if backend == "sqlite":
        raw = sqlite3.connect(make_url(db_url).database or "")
        try:
            values = {**params, "cid": conversation.id.hex}
            explain = "EXPLAIN QUERY PLAN " + sql.RECORDED_WITH_KEY.sqlite
            steps = [row[3] for row in raw.execute(explain, values)]
        finally:
            raw.close()
        probes = [step for step in steps if "_key" in step]
        assert probes and all("chat_history_id=? AND key=?" in step for step in probes), steps
        return
    connection = await asyncpg.connect(**connect_options(make_url(db_url)))
    try:
        args = [params[name] for name in sql.RECORDED_WITH_KEY.names]
        explain = "EXPLAIN (FORMAT JSON) " + sql.RECORDED_WITH_KEY.postgres
        explained = await connection.fetchval(explain, *args)
    finally:
        await connection.close()
    conditions = _index_conditions(json.loads(explained)[0]["Plan"])
    assert conditions and all("chat_history_id = h.id" in c for c in conditions), explained
