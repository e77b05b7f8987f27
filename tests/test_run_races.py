"""PostgreSQL: a run's end with its last messages (``finish_run``) and a whole run recorded into a
conversation (``record_run``), each one statement, queued for the conversation's lock behind
other writes: each writes and answers what it would had it come after them, or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import make_url

from chatmemory import (
    ChatMemory,
    ConflictError,
    ConversationNotFound,
    HistoryNotFound,
    NewMessage,
    Principal,
)
from tests.test_concurrency import _postgres_lock, _until_queued

LAST = [NewMessage("user", "last question"), NewMessage("assistant", "last answer")]


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[tuple[ChatMemory, str]]:
    from tests.conftest import _create_database

    db_url = await _create_database(postgres_url)
    async with ChatMemory.open(db_url) as memory:
        yield memory, db_url


async def _raw(db_url: str) -> asyncpg.Connection:
    url = make_url(db_url)
    return await asyncpg.connect(user=url.username, host=url.query.get("host") or url.host, port=url.port,
                                 database=url.database)  # fmt: skip


async def _written(db_url: str, conversation_id: object) -> tuple[object, ...]:
    """What a conversation holds, deleted or not: its counters, its messages' seqs and its
    change log's kinds."""
    conn = await _raw(db_url)
    try:
        counters = await conn.fetchrow(
            "SELECT last_seq, message_count, last_message_preview FROM chat_conversations WHERE id = $1",
            conversation_id,
        )
        seqs = await conn.fetchval(
            "SELECT array_agg(seq ORDER BY seq) FROM chat_messages WHERE chat_conversation_id = $1",
            conversation_id,
        )
        kinds = await conn.fetchval(
            "SELECT array_agg(kind ORDER BY id) FROM chat_changes WHERE chat_conversation_id = $1",
            conversation_id,
        )
        return tuple(counters), seqs, kinds
    finally:
        await conn.close()


async def test_queued_behind_changes_and_an_append_they_write_after_them(
    store: tuple[ChatMemory, str],
) -> None:
    """A run's end queued behind a change of its history's model and an append takes the
    ``seq`` after the append, gives its assistant message the new model, and answers the rows
    it stored; a run recorded behind it takes the ``seq`` after those."""
    memory, db_url = store
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    run = await alice.start_run(conv.id, model="m", messages=[NewMessage("user", "first")])
    waiting, release = await _postgres_lock(db_url, conv.id)
    try:
        model = asyncio.ensure_future(alice.update_history(run.history.id, model="n"))
        await _until_queued(waiting, 1, "the model's change")
        append = asyncio.ensure_future(
            alice.append_messages(run.history.id, [NewMessage("user", "a"), NewMessage("user", "b")])
        )
        await _until_queued(waiting, 2, "the append")
        finish = asyncio.ensure_future(alice.finish_run(run.history.id, messages=LAST, usage={"t": 1}))
        await _until_queued(waiting, 3, "the run's end")
        record = asyncio.ensure_future(
            alice.record_run(conv.id, model="r", messages=[NewMessage("assistant", "recorded")])
        )
        await _until_queued(waiting, 4, "the recorded run")
    finally:
        await release()
    _, appended, finished, recorded = await asyncio.gather(model, append, finish, record)
    assert [m.seq for m in appended] == [2, 3]
    # The append updated the conversation's row: PostgreSQL then hands the new row version to
    # whichever of the two waiting statements asks first, so the recorded run may come first.
    (recorded_seq,) = [m.seq for m in recorded.messages]
    recorded_last = recorded_seq == 6
    assert [m.seq for m in finished.messages] == ([4, 5] if recorded_last else [5, 6])
    assert [m.model for m in finished.messages] == [None, "n"]
    history = finished.history
    assert (history.model, history.status, history.usage) == ("n", "completed", {"t": 1})
    stored = await alice.get_history(run.history.id)
    assert [m.model_dump() for m in stored.messages or []] == [
        *(m.model_dump() for m in [*run.messages, *appended]),
        *(m.model_dump() for m in finished.messages),
    ]
    assert stored.model_dump(exclude={"messages"}) == finished.history.model_dump()
    assert [(m.seq, m.model) for m in recorded.messages] == [(6 if recorded_last else 4, "r")]
    other = await alice.get_history(recorded.history.id)
    assert [m.model_dump() for m in other.messages or ()] == [m.model_dump() for m in recorded.messages]
    summary = await alice.get_conversation(conv.id)
    last = recorded.messages[-1] if recorded_last else finished.messages[-1]
    assert (summary.message_count, summary.last_message_preview) == (6, last.content)
    assert summary.updated_at == (recorded.history.created_at if recorded_last else history.updated_at)
    assert (await _written(db_url, conv.id))[0][0] == 6


async def test_a_run_end_queued_behind_a_finish_or_a_deletion_writes_nothing(
    store: tuple[ChatMemory, str],
) -> None:
    """Queued behind its history's finish, its conversation's deletion or its history's
    deletion, a run's end with its last messages is refused and stores none of them: no
    message, no counter moved, no change logged."""
    memory, db_url = store
    alice = memory.scoped(Principal("alice"))
    cases = (
        (lambda cid, hid: alice.finish_history(hid), ConflictError, "history.finished"),
        (lambda cid, hid: alice.delete_history(hid), HistoryNotFound, "history.deleted"),
        (lambda cid, hid: alice.delete_conversation(cid), HistoryNotFound, "conversation.deleted"),
    )
    for first, refused, logged in cases:
        conv = await alice.start_conversation()
        run = await alice.start_run(conv.id, model="m", messages=[NewMessage("user", "first")])
        waiting, release = await _postgres_lock(db_url, conv.id)
        try:
            ahead = asyncio.ensure_future(first(conv.id, run.history.id))
            await _until_queued(waiting, 1, "the first change")
            finish = asyncio.ensure_future(alice.finish_run(run.history.id, messages=LAST))
            await _until_queued(waiting, 2, "the run's end")
            before = await _written(db_url, conv.id)
        finally:
            await release()
        done, outcome = await asyncio.gather(ahead, finish, return_exceptions=True)
        assert not isinstance(done, BaseException), done
        assert isinstance(outcome, refused), outcome
        counters, seqs, kinds = await _written(db_url, conv.id)
        assert (counters[0], seqs) == (1, [1])
        assert kinds == [*before[2], logged]


async def test_a_run_recorded_behind_its_conversations_deletion_writes_nothing(
    store: tuple[ChatMemory, str],
) -> None:
    memory, db_url = store
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    await alice.record_run(conv.id, model="m", messages=[NewMessage("user", "kept")])
    waiting, release = await _postgres_lock(db_url, conv.id)
    try:
        deletion = asyncio.ensure_future(alice.delete_conversation(conv.id))
        await _until_queued(waiting, 1, "the deletion")
        record = asyncio.ensure_future(alice.record_run(conv.id, model="m", messages=LAST))
        await _until_queued(waiting, 2, "the recorded run")
    finally:
        await release()
    deleted, refused = await asyncio.gather(deletion, record, return_exceptions=True)
    assert deleted is None and isinstance(refused, ConversationNotFound), refused
    counters, seqs, kinds = await _written(db_url, conv.id)
    assert counters[0] == 1 and seqs == [1]
    assert kinds[-1] == "conversation.deleted" and kinds.count("history.started") == 1
