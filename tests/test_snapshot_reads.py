"""Reads of a row and what hangs from it see one moment of the database, on both backends.

``get_conversation`` (with or without messages), ``export_conversation``, ``get_history``
and ``get_context`` read a row, then what hangs from it. Another writer commits while they
read (``committed_before``: before a marked statement, see ``STATEMENTS``): each read answers
the database as it was before that write or after it, never a mix. Under PostgreSQL's READ
COMMITTED each statement of a read would take a snapshot of its own: a conversation read that
way counted messages it did not list and dropped those of a history it had not seen start,
and a conversation deleted meanwhile read as one without histories, or with no context.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from chatmemory import ChatMemory, ConversationNotFound, HistoryNotFound, Principal
from chatmemory._db import create_engine
from chatmemory._plan import Stmt
from chatmemory.scope import Scope
from tests._postgres import _execute, create_database
from tests.transactions import committed_before, committed_before_messages


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


HISTORIES = "FROM chat_histories h WHERE h.chat_conversation_id"
COMPLETE = "AND m.status = 'complete'"


async def test_a_conversation_without_messages_counts_what_its_histories_hold(
    memory: ChatMemory, alice: Scope, db_url: str
) -> None:
    """``get_conversation`` (no messages) while another store starts a run with a prompt: the
    summary counts the run's message if it lists the run, and not if it does not."""
    conv, _ = await _conversation(alice)
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))

        async def work() -> None:
            await other.start_run(conv.id, model="m", messages=[{"role": "user", "content": "second"}])

        with committed_before(memory, HISTORIES, work) as done:
            detail = await alice.get_conversation(conv.id)
        assert done
    assert (len(detail.histories), detail.message_count) in ((1, 3), (2, 4))


async def _read_across_a_deletion(
    memory: ChatMemory, alice: Scope, db_url: str, marker: str, read: Callable[[Any], Awaitable[Any]]
) -> Any:
    """``read(conversation_id)`` while another store deletes the conversation (before the
    statement ``marker`` names): its answer, or ``None`` for ConversationNotFound."""
    conv, _ = await _conversation(alice)
    answer = None
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))
        deleting = committed_before(memory, marker, lambda: other.delete_conversation(conv.id))
        with deleting as done, contextlib.suppress(ConversationNotFound):
            answer = await read(conv.id)
        assert done
    return answer


async def test_a_conversation_deleted_while_read_without_messages_is_read_whole_or_not_found(
    memory: ChatMemory, alice: Scope, db_url: str
) -> None:
    """Deleted by another store while read: as it was (its history listed, as its count says)
    or not found, never a conversation of 3 messages and no history."""
    detail = await _read_across_a_deletion(memory, alice, db_url, HISTORIES, alice.get_conversation)
    if detail is not None:
        assert (len(detail.histories), detail.message_count) == (1, 3)


async def test_the_context_of_a_conversation_deleted_while_read_is_whole_or_not_found(
    memory: ChatMemory, alice: Scope, db_url: str
) -> None:
    """``get_context`` while another store deletes the conversation: its 3 messages, or
    ConversationNotFound; never an empty context, which a resuming agent takes for a new
    conversation."""
    context = await _read_across_a_deletion(memory, alice, db_url, COMPLETE, alice.get_context)
    if context is not None:
        assert [m.content for m in context.messages] == ["0", "1", "2"]


READS: dict[str, Callable[[Scope, Any, Any], Awaitable[Any]]] = {
    "get_conversation": lambda chat, conv, run: chat.get_conversation(conv.id),
    "get_conversation(messages=True)": lambda chat, conv, run: chat.get_conversation(conv.id, messages=True),
    "export_conversation": lambda chat, conv, run: chat.export_conversation(conv.id),
    "get_history": lambda chat, conv, run: chat.get_history(run.id),
    "get_history(messages=False)": lambda chat, conv, run: chat.get_history(run.id, messages=False),
    "get_context": lambda chat, conv, run: chat.get_context(conv.id),
}
# Each read's statements, each as (its marker above or the messages', whether it asks for one
# snapshot, which every read on SQLite has: each is one transaction). PostgreSQL reads a row
# and what hangs from it in one statement, and a conversation with its histories' messages in
# three that share a snapshot; a context reads the messages of a visible conversation. The
# tests above commit another store's write before the marked statement.
STATEMENTS = {
    "sqlite": {
        "get_conversation": [(False, False), (True, False)],
        "get_conversation(messages=True)": [(False, True), (True, False), (True, False)],
        "export_conversation": [(False, True), (True, False), (True, False)],
        "get_history": [(False, False), (True, False)],
        "get_history(messages=False)": [(False, False)],
        "get_context": [(True, False)],
    },
    "postgres": {
        "get_conversation": [(True, False)],
        "get_conversation(messages=True)": [(False, True), (True, False), (True, False)],
        "export_conversation": [(False, True), (True, False), (True, False)],
        "get_history": [(True, False)],
        "get_history(messages=False)": [(False, False)],
        "get_context": [(True, False)],
    },
}
_MARKERS = (HISTORIES, COMPLETE, "FROM chat_messages")


@pytest.mark.parametrize("read", list(READS))
async def test_each_read_is_one_statement_or_one_snapshot(
    memory: ChatMemory, alice: Scope, backend: str, read: str
) -> None:
    conv, run = await _conversation(alice)
    sent: list[tuple[bool, bool]] = []

    def note(stmt: Stmt) -> None:
        text = (stmt.sql.sqlite if memory._db.is_sqlite else stmt.sql.postgres) or ""
        sent.append((any(marker in text for marker in _MARKERS), stmt.snapshot))

    memory._db.set_trace(note)
    try:
        await READS[read](alice, conv, run)
    finally:
        memory._db.set_trace(None)
    assert sent == STATEMENTS[backend][read]


@pytest.mark.parametrize("via", ["store", "engine"])
async def test_connections_are_left_clean_by_reads_in_one_snapshot(
    db_url: str, backend: str, via: str
) -> None:
    """A read in one snapshot (a ``REPEATABLE READ READ ONLY`` transaction on PostgreSQL) leaves
    its connection as it found it, whether it answers or fails with a not-found: the next calls
    on the store's kept connection, or on the engine's, read under READ COMMITTED and write."""
    async with ChatMemory.open(db_url) as opened:
        if via == "store":
            await _read_and_write_on_clean_connections(opened, backend)
            return
    engine = create_engine(db_url)
    try:
        async with ChatMemory(engine) as memory:
            await _read_and_write_on_clean_connections(memory, "")
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            if backend == "postgres":
                state = (raw.is_in_transaction(), await raw.fetchval("SHOW transaction_isolation"))
                assert state == (False, "read committed")
    finally:
        await engine.dispose()


async def _read_and_write_on_clean_connections(memory: ChatMemory, backend: str) -> None:
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    for _ in range(3):
        with pytest.raises(ConversationNotFound):
            await alice.get_conversation(uuid.uuid4(), messages=True)
        with pytest.raises(HistoryNotFound):
            await alice.get_history(uuid.uuid4())
        await alice.get_conversation(conv.id, messages=True)
        await alice.append_messages(run.id, [{"role": "user", "content": "x"}])
    assert len((await alice.get_history(run.id)).messages or ()) == 3
    if backend == "postgres":
        driver = memory._db._postgres
        assert driver is not None and driver._idle

        async def state() -> list[tuple[bool, str, str]]:
            return [
                (
                    c.is_in_transaction(),
                    await c.fetchval("SHOW transaction_isolation"),
                    await c.fetchval("SHOW transaction_read_only"),
                )
                for c in driver._idle
            ]

        seen = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(state(), driver._loop))
        assert all(s == (False, "read committed", "off") for s in seen), seen


@pytest.mark.parametrize("via", ["store", "engine"])
async def test_reads_in_one_snapshot_answer_after_a_column_changes_type(postgres_url: str, via: str) -> None:
    """A column's type changed by another session (a migration's ``ALTER TABLE ... TYPE``)
    invalidates the statements a connection prepared before; asyncpg prepares one again by
    itself only outside a transaction, so a read in one snapshot (which wrote nothing) runs
    again and answers, whichever of its statements met the change first."""
    url = await create_database(postgres_url)
    async with ChatMemory.open(url):  # migrated
        pass
    engine = create_engine(url) if via == "engine" else None
    async with ChatMemory.open(url) if engine is None else ChatMemory(engine) as memory:
        alice = memory.scoped(Principal("alice"))
        conv, _ = await _conversation(alice)
        await alice.get_conversation(conv.id, messages=True)
        await alice.export_conversation(conv.id)
        for changed in ("chat_conversations ALTER COLUMN title", "chat_messages ALTER COLUMN role"):
            await _execute(url, f"ALTER TABLE {changed} TYPE varchar(300)")
            detail = await alice.get_conversation(conv.id, messages=True)
            assert [m.content for m in detail.histories[0].messages or ()] == ["0", "1", "2"]
            await _execute(url, f"ALTER TABLE {changed} TYPE text")
            exported = await alice.export_conversation(conv.id)
            assert [m["content"] for m in exported["histories"][0]["messages"]] == ["0", "1", "2"]
    if engine is not None:
        await engine.dispose()
