"""PostgreSQL: an append or a run's end whose messages carry keys is one statement that does not
look its keys up (``Stmt.unread_keys``). Where a key is stored already, even by a writer that
committed while the statement waited for the conversation's lock (after its snapshot), the key
index refuses the insert, nothing is written, and the same call runs again, on its connection,
as the plan that looks the keys up under the lock: each key is stored once, and every caller is
answered with the stored message. Two stores stand for two processes; calls are made to wait on
the conversation's row, held from a third connection, until all have sent their statement.

Running again in the same call keeps what any other call has: its place among appends queued
behind one history's transaction (in its savepoint there), its answer when a close begins after
it started, and its end when its caller is cancelled once it reached the database. Also pinned:
the race on a caller's engine (``ChatMemory(engine)``), batches of stored and new keys, a
deleted key sent again and a key of another history."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

import asyncpg
import pytest

from chatmemory import ChatMemory, ConflictError, History, Principal, _messages
from chatmemory import _schema as schema
from chatmemory import _sql as sql
from chatmemory._db import create_engine
from chatmemory._plan import Plan
from chatmemory.scope import Scope
from tests.conftest import _create_database
from tests.test_postgres_group_commit import (
    _history,
    _plain,
    _queued,
    _row_held,
    queue_of,
    until,
)


async def _waiting_on_locks(url: str) -> int:
    """How many backends of the database wait for a lock."""
    watcher = await asyncpg.connect(_plain(url))
    try:
        return int(
            await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        )
    finally:
        await watcher.close()


async def _all_waiting(url: str, n: int) -> None:
    for _ in range(3000):
        if await _waiting_on_locks(url) == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{n} calls never waited for the conversation's row")


async def _racing(url: str, history: History, *calls: Any) -> list[Any]:
    """Run ``calls`` (coroutine factories) while the history's conversation row is held, and let
    them go once every one waits for it, so each one's statement took its snapshot before the
    others committed. Each starts once the one before it waits, and PostgreSQL hands a row's
    lock to its waiters in the order they came: they take it in the order given."""
    async with _row_held(url, history.conversation_id):
        started = []
        for call in calls:
            started.append(asyncio.ensure_future(call()))
            await _all_waiting(url, len(started))
    return await asyncio.wait_for(asyncio.gather(*started), 30)


async def _two_stores(postgres_url: str) -> tuple[str, ChatMemory, ChatMemory, Scope, Scope, History]:
    url = await _create_database(postgres_url)
    first, second = await ChatMemory.open(url), await ChatMemory.open(url)
    one, other = first.scoped(Principal("alice")), second.scoped(Principal("alice"))
    conversation = await one.start_conversation()
    return url, first, second, one, other, await one.start_history(conversation.id, model="m")


async def test_one_key_appended_by_two_processes_at_once_is_stored_once(postgres_url: str) -> None:
    url, first, second, one, other, run = await _two_stores(postgres_url)
    async with first, second:
        message = {"role": "user", "content": "hi", "key": "k"}
        a, b = await _racing(
            url,
            run,
            lambda: one.append_messages(run.id, [message]),
            lambda: other.append_messages(run.id, [message]),
        )
        assert a == b and a[0].seq == 1 and a[0].key == "k"
        transcript = await one.transcript(run.conversation_id)
        assert [(m.id, m.seq) for m in transcript] == [(a[0].id, 1)]
        summary = await one.get_conversation(run.conversation_id)
        assert (summary.message_count, summary.last_message_preview) == (1, "hi")
        after = await other.append_messages(run.id, [{"role": "user", "content": "next"}])
        assert after[0].seq == 2


async def test_a_run_ended_with_a_key_another_process_appended_meanwhile(postgres_url: str) -> None:
    """The append takes the lock first; the run's end, whose statement's snapshot predates the
    append's commit, meets the key in the index and looks the keys up: the key is stored once,
    both answers carry that message, the run's other message is stored after it, and the run is
    finished. (The other order refuses the append: its history is finished by then.)"""
    url, first, second, one, other, run = await _two_stores(postgres_url)
    async with first, second:
        answer = {"role": "assistant", "content": "hello", "key": "a"}
        done = {"role": "assistant", "content": "bye", "key": "b"}
        appended, finished = await _racing(
            url,
            run,
            lambda: one.append_messages(run.id, [answer]),
            lambda: other.finish_run(run.id, messages=[answer, done]),
        )
        assert finished.history.status == "completed"
        assert finished.messages[0] == appended[0]
        transcript = await one.transcript(run.conversation_id)
        assert [(m.key, m.seq) for m in transcript] == [("a", 1), ("b", 2)]
        assert [m.id for m in transcript] == [m.id for m in finished.messages]
        summary = await one.get_conversation(run.conversation_id)
        assert (summary.message_count, summary.last_message_preview) == (2, "bye")


async def test_many_keyed_appends_from_two_processes_store_each_key_once(postgres_url: str) -> None:
    """Two stores resending the same keyed turns as fast as they can (no lock held): every key is
    stored once, in one of the orders the turns were sent in, with consecutive ``seq``."""
    _url, first, second, one, other, run = await _two_stores(postgres_url)
    async with first, second:
        turns = [
            [
                {"role": "user", "content": f"q{i}", "key": f"q{i}"},
                {"role": "assistant", "content": f"a{i}", "key": f"a{i}"},
            ]
            for i in range(30)
        ]

        async def send(chat: Scope) -> list[list[Any]]:
            return [await chat.append_messages(run.id, turn) for turn in turns]

        mine, theirs = await asyncio.gather(send(one), send(other))
        assert [[m.id for m in t] for t in mine] == [[m.id for m in t] for t in theirs]
        transcript = await one.transcript(run.conversation_id)
        assert [m.key for m in transcript] == [m["key"] for turn in turns for m in turn]
        assert [m.seq for m in transcript] == list(range(1, 61))
        assert (await one.get_conversation(run.conversation_id)).message_count == 60


def test_the_driver_names_the_schemas_key_index() -> None:
    """The driver tells a stored key from any other refusal by the index's name."""
    table = schema.metadata.tables["chat_messages"]
    assert [index.name for index in table.indexes if index.unique] == [sql.KEY_INDEX]


async def _between_two(url: str, chat: Scope, run: History, batch: list[Any], last: str) -> list[Any]:
    """Appends of "first", then ``batch``, then ``last`` while the history's conversation row is
    held: the first waits on it, the other two queue behind it and share the next transaction,
    in that order. Answers the three calls."""
    async with _row_held(url, run.conversation_id):
        calls = await _queued(chat, run.id, [{"role": "user", "content": "first"}])
        for queued, appended in enumerate((batch, [{"role": "user", "content": last}]), 1):
            calls.append(asyncio.ensure_future(chat.append_messages(run.id, appended)))
            await until(lambda n=queued: len(queue_of(chat, run.id)) == n, f"{queued} appends queued")
    return calls


async def test_queued_appends_keep_queue_order_when_one_resends_a_key(postgres_url: str) -> None:
    """Appends queued behind one history's transaction are stored in queue order (as on SQLite):
    one re-sending a stored key with a new message keeps its place."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        await chat.append_messages(run.id, [{"role": "user", "content": "s", "key": "k"}])
        resent = [{"role": "user", "content": "s", "key": "k"}, {"role": "user", "content": "second"}]
        calls = await _between_two(url, chat, run, resent, "third")
        await asyncio.wait_for(asyncio.gather(*calls), 30)
        transcript = await chat.transcript(run.conversation_id)
        assert [m.content for m in transcript] == ["s", "first", "second", "third"]


async def test_a_resent_key_queued_before_a_close_is_answered(postgres_url: str) -> None:
    """Calls already running when the close begins finish first (README): an append re-sending
    a stored key, queued before the close, is answered with the stored message."""
    url, memory, chat, run = await _history(postgres_url)
    stored = await chat.append_messages(run.id, [{"role": "user", "content": "s", "key": "k"}])
    async with _row_held(url, run.conversation_id):
        calls = await _queued(
            chat,
            run.id,
            [{"role": "user", "content": "s", "key": "k"}, {"role": "user", "content": "plain"}],
        )
        closing = asyncio.ensure_future(memory.close())
        await until(lambda: memory._db._postgres._closing, "the store's driver closing")
    await asyncio.wait_for(closing, 60)
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
    assert results[0] == stored, results
    assert [m.content for m in results[1]] == ["plain"]


async def test_a_run_finished_with_a_resent_key_when_the_close_begins_is_finished(postgres_url: str) -> None:
    url, memory, chat, run = await _history(postgres_url)
    stored = await chat.append_messages(run.id, [{"role": "user", "content": "s", "key": "k"}])
    async with _row_held(url, run.conversation_id):
        call = asyncio.ensure_future(
            chat.finish_run(run.id, messages=[{"role": "user", "content": "s", "key": "k"}])
        )
        await _all_waiting(url, 1)
        closing = asyncio.ensure_future(memory.close())
        await until(lambda: memory._db._postgres._closing, "the store's driver closing")
    await asyncio.wait_for(closing, 60)
    result: list[Any] = await asyncio.wait_for(asyncio.gather(call, return_exceptions=True), 30)
    assert not isinstance(result[0], Exception), result
    assert result[0].messages == stored and result[0].history.status == "completed"


async def test_a_cancelled_finish_that_reached_the_database_runs_to_its_end(postgres_url: str) -> None:
    """A call that has reached the database runs to its end even if its caller is cancelled
    (README): a run's end re-sending a stored key, cancelled while its statement waits for the
    lock, still finishes the run and stores its new message, as it does without the stored key."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        await chat.append_messages(run.id, [{"role": "user", "content": "s", "key": "k"}])
        resent = [{"role": "user", "content": "s", "key": "k"}, {"role": "assistant", "content": "new"}]
        async with _row_held(url, run.conversation_id):
            call = asyncio.ensure_future(chat.finish_run(run.id, messages=resent))
            await _all_waiting(url, 1)
            call.cancel()
            await asyncio.sleep(0.05)
        await asyncio.wait({call}, timeout=30)
        assert call.cancelled()
        assert (await chat.get_history(run.id)).status == "completed"
        assert [m.content for m in await chat.transcript(run.conversation_id)] == ["s", "new"]


async def test_a_callers_engine_races_a_store_on_one_key(postgres_url: str) -> None:
    url = await _create_database(postgres_url)
    engine = create_engine(url)
    try:
        async with ChatMemory(engine) as m1, ChatMemory.open(url) as m2:
            one, other = m1.scoped(Principal("alice")), m2.scoped(Principal("alice"))
            conv = await one.start_conversation()
            run = await one.start_history(conv.id, model="m")
            batch = [
                {"role": "user", "content": "x", "key": "k"},
                {"role": "user", "content": "y", "key": "j"},
            ]
            a, b = await _racing(
                url,
                run,
                lambda: one.append_messages(run.id, batch),
                lambda: other.append_messages(run.id, batch),
            )
            assert a == b and [m.key for m in await one.transcript(conv.id)] == ["k", "j"]
            assert await one.append_messages(run.id, batch) == a
            last = {"role": "assistant", "content": "z", "key": "z"}
            finished = await one.finish_run(run.id, messages=[*batch, last])
            assert finished.messages[:2] == a and finished.messages[2].seq == 3
    finally:
        await engine.dispose()


async def test_many_appends_of_one_key_from_two_stores(postgres_url: str) -> None:
    _url, first, second, one, other, run = await _two_stores(postgres_url)
    async with first, second:
        message = {"role": "user", "content": "hi", "key": "k"}
        calls = [one.append_messages(run.id, [message]) for _ in range(10)]
        calls += [other.append_messages(run.id, [message]) for _ in range(10)]
        answers = await asyncio.gather(*calls)
        assert all(a == answers[0] for a in answers)
        assert len(await one.transcript(run.conversation_id)) == 1
        assert (await one.get_conversation(run.conversation_id)).message_count == 1


async def test_partial_batches_racing(postgres_url: str) -> None:
    url, first, second, one, other, run = await _two_stores(postgres_url)
    async with first, second:
        stored = await one.append_messages(run.id, [{"role": "user", "content": "s", "key": "s"}])
        b1 = [
            {"role": "user", "content": "s", "key": "s"},
            {"role": "user", "content": "n1", "key": "n1"},
            {"role": "user", "content": "plain"},
        ]
        b2 = [{"role": "user", "content": "n1", "key": "n1"}, {"role": "user", "content": "n2", "key": "n2"}]
        a, b = await _racing(
            url, run, lambda: one.append_messages(run.id, b1), lambda: other.append_messages(run.id, b2)
        )
        assert a[0] == stored[0] and a[1] == b[0]
        transcript = await one.transcript(run.conversation_id)
        assert sorted(m.key or "-" for m in transcript) == ["-", "n1", "n2", "s"]
        assert [m.seq for m in transcript] == [1, 2, 3, 4]
        summary = await one.get_conversation(run.conversation_id)
        assert (summary.message_count, summary.last_message_preview) == (4, transcript[-1].content)


async def test_a_deleted_key_sent_again_and_a_key_of_another_history(postgres_url: str) -> None:
    _url, first, second, one, other, run = await _two_stores(postgres_url)
    async with first, second:
        m = await one.append_messages(run.id, [{"role": "user", "content": "a", "key": "k"}])
        await one.delete_message(m[0].id)
        again = await other.append_messages(run.id, [{"role": "user", "content": "b", "key": "k"}])
        assert again[0].id != m[0].id and again[0].content == "b"
        assert await one.append_messages(run.id, [{"role": "user", "content": "c", "key": "k"}]) == again
        run2 = await one.start_history(run.conversation_id, model="m")
        n = await other.append_messages(run2.id, [{"role": "user", "content": "a", "key": "k"}])
        assert n[0].id != again[0].id and n[0].seq == 3


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "in-a-shared-transaction"])
async def test_an_error_of_the_lookup_plan_does_not_carry_the_refused_statement(
    postgres_url: str, shared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan that looks the keys up fails (here at once, with ConflictError, as it would for
    a history finished between the refusal and the lookup): that error is the call's own, not one
    raised while handling the refusal, whose traceback would print the refused statement's
    messages. Alone, and queued in a shared transaction between two other appends."""
    url, memory, chat, run = await _history(postgres_url)
    looked_up = _messages.append

    def append(*args: Any, unread_keys: bool = False, **options: Any) -> Any:
        if unread_keys:
            return looked_up(*args, unread_keys=True, **options)
        return _refused(ConflictError(f"history {run.id} is completed"))

    async with memory:
        await chat.append_messages(run.id, [{"role": "user", "content": "s", "key": "k"}])
        monkeypatch.setattr(_messages, "append", append)
        batch = [{"role": "user", "content": "private words"}, {"role": "user", "content": "s", "key": "k"}]
        if shared:
            calls = await _between_two(url, chat, run, batch, "last")
        else:
            calls = [asyncio.ensure_future(chat.append_messages(run.id, batch))]
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        outcome = outcomes[1 if shared else 0]
        assert isinstance(outcome, ConflictError), outcomes
        assert outcome.__cause__ is None and outcome.__context__ is None
        assert "private words" not in "".join(traceback.format_exception(outcome))
        transcript = await chat.transcript(run.conversation_id)
        assert [m.content for m in transcript] == ["s", *(["first", "last"] if shared else [])]


def _refused(error: Exception) -> Plan[Any]:
    """A plan that fails before its first statement."""
    raise error
    yield  # a generator
