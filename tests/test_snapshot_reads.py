"""Reads of several statements see one moment of the database, on both backends.

``get_conversation(messages=True)``, ``export_conversation`` and ``get_history(messages=True)``
read a row, then what hangs from it. Another writer commits between two of their statements
(``committed_before_messages``, just before the messages are read): each read answers the
database as it was before that write or after it, never a mix. Under PostgreSQL's READ
COMMITTED each statement would take a snapshot of its own, and a conversation read that way
counted messages it did not list and dropped those of a history it had not seen start.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from chatmemory import ChatMemory, Principal
from chatmemory._db import create_engine
from chatmemory.scope import Scope
from tests.transactions import committed_before_messages


async def _conversation(alice: Scope) -> tuple[Any, Any]:
    conv = await alice.start_conversation()
    first = await alice.start_history(conv.id, model="m")
    await alice.append_messages(first.id, [{"role": "user", "content": str(i)} for i in range(3)])
    return conv, first


def _another_run_and_an_append(other: Scope, conv: Any, first: Any) -> Any:
    """Another store starts a run with its prompt (seq 4), then appends to the first run (seq 5):
    a reader that missed the new run's message and resumed after the newest one it read (5)
    would never see it."""

    async def work() -> None:
        await other.start_run(conv.id, model="m", messages=[{"role": "user", "content": "second run"}])
        await other.append_messages(first.id, [{"role": "assistant", "content": "late"}])

    return work


def _read(histories: list[tuple[Any, list[str]]], counted: int) -> tuple[list[list[str]], int]:
    return [contents for _, contents in histories], counted


BEFORE = ([["0", "1", "2"]], 3)
AFTER = ([["0", "1", "2", "late"], ["second run"]], 5)


async def _detail_across_a_write(memory: ChatMemory, db_url: str) -> tuple[list[list[str]], int]:
    alice = memory.scoped(Principal("alice"))
    conv, first = await _conversation(alice)
    async with ChatMemory.open(db_url) as elsewhere:
        work = _another_run_and_an_append(elsewhere.scoped(Principal("alice")), conv, first)
        with committed_before_messages(memory, work) as done:
            detail = await alice.get_conversation(conv.id, messages=True)
        assert done  # the other store committed while the conversation was read
    listed = [(h.id, [m.content for m in h.messages or ()]) for h in detail.histories]
    return _read(listed, detail.message_count)


async def test_a_conversation_with_its_messages_is_read_at_one_moment(
    memory: ChatMemory, db_url: str
) -> None:
    assert await _detail_across_a_write(memory, db_url) in (BEFORE, AFTER)


async def test_a_conversation_read_through_a_callers_engine_is_read_at_one_moment(db_url: str) -> None:
    """The same through ``ChatMemory(engine)``, whose reads run on the engine's own connections."""
    async with ChatMemory.open(db_url):
        pass  # migrate
    engine: AsyncEngine = create_engine(db_url)
    try:
        async with ChatMemory(engine) as memory:
            assert await _detail_across_a_write(memory, db_url) in (BEFORE, AFTER)
    finally:
        await engine.dispose()


async def test_an_export_is_read_at_one_moment(memory: ChatMemory, alice: Scope, db_url: str) -> None:
    conv, first = await _conversation(alice)
    async with ChatMemory.open(db_url) as elsewhere:
        work = _another_run_and_an_append(elsewhere.scoped(Principal("alice")), conv, first)
        with committed_before_messages(memory, work) as done:
            document = await alice.export_conversation(conv.id)
        assert done
    listed = [(h["id"], [m["content"] for m in h["messages"]]) for h in document["histories"]]
    assert _read(listed, sum(len(contents) for _, contents in listed)) in (BEFORE, AFTER)
    # It imports whole, as the conversation it was.
    copy = await alice.import_conversation(document, new_ids=True)
    restored = await alice.get_conversation(copy.id, messages=True)
    assert [[m.content for m in h.messages or ()] for h in restored.histories] == [c for _, c in listed]


@pytest.mark.parametrize("status", ["completed", "failed"])
async def test_a_history_with_its_messages_is_read_at_one_moment(
    memory: ChatMemory, alice: Scope, db_url: str, status: str
) -> None:
    """A run finished with its last message by another store while the history is read: read
    running without that message, or finished with it."""
    _, run = await _conversation(alice)
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))
        end = [{"role": "assistant", "content": "end"}]
        with committed_before_messages(
            memory, lambda: other.finish_run(run.id, messages=end, status=status)
        ) as done:
            history = await alice.get_history(run.id)
        assert done
    read = (history.status, [m.content for m in history.messages or ()])
    assert read in (("running", ["0", "1", "2"]), (status, ["0", "1", "2", "end"]))


async def test_only_reads_with_messages_ask_for_one_snapshot(memory: ChatMemory, alice: Scope) -> None:
    """Only a read that needs one snapshot asks for it (on PostgreSQL, two round trips more)."""
    conv, run = await _conversation(alice)
    asked: list[bool] = []
    memory._db.set_trace(lambda stmt: asked.append(stmt.snapshot))
    try:
        await alice.get_conversation(conv.id)
        await alice.get_history(run.id, messages=False)
        await alice.list_messages(conversation_id=conv.id)
        assert not any(asked)
        await alice.get_conversation(conv.id, messages=True)
    finally:
        memory._db.set_trace(None)
    assert asked[-3:] == [True, False, False]  # the first statement asks, for the read's all
