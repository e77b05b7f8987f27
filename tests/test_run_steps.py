"""``Scope.start_run`` and ``Scope.finish_run``: a run's first and last messages stored in the
transaction that starts or finishes its history, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatmemory import (
    ChatMemory,
    ConflictError,
    ConversationNotFound,
    HistoryNotFound,
    InvalidInputError,
    Principal,
)
from chatmemory._sql import TOUCH_CONVERSATION
from chatmemory.scope import Scope
from tests.transactions import counted

FIRST = [{"role": "user", "content": "hi", "key": "u1"}]
LAST = [
    {"role": "assistant", "content": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {}}]},
    {"role": "tool", "content": [{"type": "tool_result", "call_id": "c1", "content": "ok"}]},
    {"role": "assistant", "content": "done"},
]


async def test_a_run_started_and_finished_with_its_messages(alice: Scope) -> None:
    conversation = await alice.start_conversation()
    started = await alice.start_run(
        conversation.id, model="m", messages=FIRST, system_prompts=["Be brief."], metadata={"a": 1}
    )
    assert (started.conversation_id, started.created) == (conversation.id, False)
    assert (started.history.status, started.history.model) == ("running", "m")
    assert started.history.system_prompts == ["Be brief."]
    assert [(m.seq, m.key, m.history_id) for m in started.messages] == [(1, "u1", started.history.id)]
    between = await alice.append_messages(started.history.id, [{"role": "user", "content": "more"}])
    finished = await alice.finish_run(started.history.id, messages=LAST, usage={"input_tokens": 5})
    assert finished.conversation_id == conversation.id
    assert (finished.history.status, finished.history.usage) == ("completed", {"input_tokens": 5})
    assert finished.history.finished_at is not None
    assert [m.seq for m in finished.messages] == [3, 4, 5]
    assert finished.messages[-1].model == "m"  # an assistant message defaults to the history's model
    stored = await alice.get_history(started.history.id)
    assert stored.status == "completed" and stored.metadata == {"a": 1}
    assert [m.id for m in stored.messages or ()] == [
        started.messages[0].id,
        between[0].id,
        *(m.id for m in finished.messages),
    ]
    assert (await alice.get_conversation(conversation.id)).message_count == 5


async def test_without_messages_they_only_start_and_finish(alice: Scope) -> None:
    conversation = await alice.start_conversation()
    started = await alice.start_run(conversation.id, model="m", messages=[])
    assert started.messages == []
    finished = await alice.finish_run(started.history.id, status="failed", error="boom")
    assert (finished.history.status, finished.history.error, finished.messages) == ("failed", "boom", [])


async def test_a_resent_key_returns_the_stored_message(alice: Scope) -> None:
    conversation = await alice.start_conversation()
    started = await alice.start_run(conversation.id, model="m", messages=FIRST)
    finished = await alice.finish_run(started.history.id, messages=[*FIRST, LAST[-1]])
    assert finished.messages[0].id == started.messages[0].id
    assert [m.seq for m in finished.messages] == [1, 2]


async def test_nothing_is_written_when_any_part_is_bad(alice: Scope, bob: Scope) -> None:
    conversation = await alice.start_conversation()
    bad = [*FIRST, {"role": "robot", "content": "x"}]
    with pytest.raises(InvalidInputError):
        await alice.start_run(conversation.id, model="m", messages=bad)
    with pytest.raises(InvalidInputError):
        await alice.start_run(conversation.id, model="", messages=FIRST)
    with pytest.raises(ConversationNotFound):
        await bob.start_run(conversation.id, model="m", messages=FIRST)
    assert (await alice.get_conversation(conversation.id)).histories == []

    started = await alice.start_run(conversation.id, model="m", messages=FIRST)
    with pytest.raises(InvalidInputError):
        await alice.finish_run(started.history.id, messages=bad)
    with pytest.raises(InvalidInputError):
        await alice.finish_run(started.history.id, messages=LAST, status="done")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        await alice.finish_run(started.history.id, messages=LAST, usage=[1])  # type: ignore[arg-type]
    with pytest.raises(HistoryNotFound):
        await bob.finish_run(started.history.id, messages=LAST)
    detail = await alice.get_history(started.history.id)
    assert (detail.status, len(detail.messages or ())) == ("running", 1)

    await alice.finish_run(started.history.id)
    with pytest.raises(ConflictError):
        await alice.finish_run(started.history.id, messages=LAST)
    with pytest.raises(ConflictError):
        await alice.finish_run(started.history.id)
    assert len((await alice.get_history(started.history.id)).messages or ()) == 1
    summary = await alice.get_conversation(conversation.id)
    assert (summary.message_count, summary.last_message_preview) == (1, "hi")


async def test_a_deleted_history_is_not_finished(alice: Scope) -> None:
    """Its last messages are not stored either: the conversation's counters do not move, and a
    later append takes the next ``seq``."""
    conversation = await alice.start_conversation()
    started = await alice.start_run(conversation.id, model="m", messages=FIRST)
    other = await alice.start_run(conversation.id, model="m", messages=[])
    await alice.delete_history(started.history.id)
    with pytest.raises(HistoryNotFound):
        await alice.finish_run(started.history.id, messages=LAST)
    assert (await alice.get_conversation(conversation.id)).message_count == 0
    added = await alice.append_messages(other.history.id, [{"role": "user", "content": "next"}])
    assert added[0].seq == 2


async def test_each_is_one_transaction(memory: ChatMemory, alice: Scope) -> None:
    conversation = await alice.start_conversation()
    with counted(memory) as transactions:
        started = await alice.start_run(conversation.id, model="m", messages=FIRST)
        await alice.finish_run(started.history.id, messages=LAST)
    assert transactions == ["write", "write"]


@pytest.mark.parametrize("first", [FIRST, []])
async def test_a_run_started_touches_its_conversation_once(memory: ChatMemory, first: list[object]) -> None:
    """A run started with messages updates its conversation's row in the append alone (its
    counters and its time); without messages, its time is set on its own (on PostgreSQL inside
    the start's one statement). Either way the conversation's ``updated_at`` is the history's
    start."""
    chat = memory.scoped(Principal("alice"))
    conversation = await chat.start_conversation()
    touches: list[str] = []
    memory._db.set_trace(
        lambda stmt: touches.append(stmt.sql.sqlite) if stmt.sql is TOUCH_CONVERSATION else None
    )
    started = await chat.start_run(conversation.id, model="m", messages=first)
    recorded = await chat.record_run(conversation.id, model="m", messages=first)
    memory._db.set_trace(None)
    assert len(touches) == (0 if first or not memory._db.is_sqlite else 2)
    for run in (started, recorded):
        summary = (await chat.get_conversation(conversation.id)).updated_at
        assert summary >= run.history.created_at
    assert (await chat.get_conversation(conversation.id)).updated_at == recorded.history.created_at


async def test_long_last_messages_and_a_long_recorded_run(alice: Scope) -> None:
    """A run's end with 150 last messages and a run of 120 recorded into its conversation (one
    statement each on PostgreSQL): each answers the rows it stored, in order, after the
    messages before it; the counters and preview follow, and a search finds the messages."""
    conversation = await alice.start_conversation()
    started = await alice.start_run(conversation.id, model="m", messages=[{"role": "user", "content": "go"}])
    last = [
        {"role": "assistant" if i % 2 else "user", "content": f"ending{i}", "metadata": {"i": i}}
        for i in range(150)
    ]
    finished = await alice.finish_run(started.history.id, messages=last)
    recorded = await alice.record_run(
        conversation.id, model="r", messages=[{"role": "assistant", "content": f"rec{i}"} for i in range(120)]
    )
    assert [m.seq for m in finished.messages] == list(range(2, 152))
    assert [m.seq for m in recorded.messages] == list(range(152, 272))
    assert [m.content for m in finished.messages] == [m["content"] for m in last]
    assert {m.model for m in finished.messages if m.role == "assistant"} == {"m"}
    assert {m.model for m in recorded.messages} == {"r"}
    stored = await alice.transcript(conversation.id)
    answered = [*started.messages, *finished.messages, *recorded.messages]
    assert [m.model_dump() for m in stored] == [m.model_dump() for m in answered]
    summary = await alice.get_conversation(conversation.id)
    assert (summary.message_count, summary.last_message_preview) == (271, "rec119")
    for word, message in (("ending140", finished.messages[140]), ("rec110", recorded.messages[110])):
        hits = (await alice.search_messages(word)).items
        assert [hit.message.id for hit in hits] == [message.id]


async def test_sqlite_call_is_its_statements_only(tmp_path: Path) -> None:
    """On SQLite a history's start checks its conversation in the insert, and a change to a
    running history (its finish included) checks it is visible and running in the update,
    which answers the row as it left it: no statement reads first. Refusals still name the
    right error and write nothing."""
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'chat.db'}") as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        foreign = await memory.scoped(Principal("bob")).start_conversation()
        await chat.record_run(conv.id, model="m", messages=[])  # opens the writer connection
        driver = memory._db._sqlite
        assert driver is not None and driver._write_connection is not None
        executed: list[str] = []
        driver._write_connection.set_trace_callback(executed.append)
        started = await chat.start_run(conv.id, model="m", messages=FIRST)
        updated = await chat.update_history(started.history.id, model="n")
        finished = await chat.finish_run(started.history.id, messages=LAST[2:], usage={"tokens": 3})
        bare = await chat.start_history(conv.id, model="m")
        with pytest.raises(ConversationNotFound):
            await chat.start_history(foreign.id, model="m")
        with pytest.raises(ConflictError, match="already completed"):
            await chat.finish_history(started.history.id)
        with pytest.raises(HistoryNotFound):
            await memory.scoped(Principal("bob")).finish_history(bare.id)
        driver._write_connection.set_trace_callback(None)
    statements = [" ".join(s.split()[:3]) for s in executed]
    assert statements == [
        # start_run: the history, the counters, its first message, the log (two changes)
        "BEGIN IMMEDIATE", "INSERT INTO chat_histories", "UPDATE chat_conversations AS",
        "INSERT INTO chat_messages", "INSERT INTO chat_changes", "INSERT INTO chat_changes", "COMMIT",
        # update_history
        "BEGIN IMMEDIATE", "UPDATE chat_histories AS", "INSERT INTO chat_changes", "COMMIT",
        # finish_run: the counters, its last message, the finish, the log (two changes)
        "BEGIN IMMEDIATE", "UPDATE chat_conversations AS", "INSERT INTO chat_messages",
        "UPDATE chat_histories AS", "INSERT INTO chat_changes", "INSERT INTO chat_changes", "COMMIT",
        # start_history without messages sets its conversation's time itself
        "BEGIN IMMEDIATE", "INSERT INTO chat_histories", "UPDATE chat_conversations SET",
        "INSERT INTO chat_changes", "COMMIT",
        # refused: the insert changes nothing; the update changes nothing, then the row says why
        "BEGIN IMMEDIATE", "INSERT INTO chat_histories", "ROLLBACK",
        "BEGIN IMMEDIATE", "UPDATE chat_histories AS", "SELECT h.id, h.chat_conversation_id,", "ROLLBACK",
        "BEGIN IMMEDIATE", "UPDATE chat_histories AS", "SELECT h.id, h.chat_conversation_id,", "ROLLBACK",
    ]  # fmt: skip
    assert (updated.model, updated.status) == ("n", "running")
    assert (finished.history.model, finished.history.status) == ("n", "completed")
    assert finished.history.usage == {"tokens": 3}
    assert finished.history.finished_at == finished.history.updated_at == finished.messages[0].created_at
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'chat.db'}") as memory:
        chat = memory.scoped(Principal("alice"))
        stored = await chat.get_history(started.history.id, messages=False)
        assert stored.model_dump(exclude={"messages"}) == finished.history.model_dump()
        histories = (await chat.get_conversation(conv.id, messages=False)).histories
        assert [h.id for h in histories][1:] == [started.history.id, bare.id]
