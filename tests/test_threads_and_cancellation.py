"""One store used from many threads and event loops, closed from any of them, and callers
cancelled at random points: the store never hangs and is never left half-written."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import make_url

from chatmemory import ChatMemory, ConflictError, HistoryNotFound, Message, Principal, StorageError
from chatmemory._db import QUICK_ROWS
from chatmemory._plan import Stmt
from tests._postgres import log_queries, pool_idle
from tests.test_postgres_group_commit import until
from tests.transactions import writer_busy

BATCH = 4


def _batch(tag: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{tag}:{i}", "key": f"{tag}:{i}"} for i in range(BATCH)]


def _batches(messages: list[Message]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        groups[m.content.rsplit(":", 1)[0]].append(m.seq)
    return groups


async def _check_whole(memory: ChatMemory, conversation_id: Any) -> list[Message]:
    """Consecutive seq, every batch whole and unbroken, the summary in step with the messages."""
    chat = memory.scoped(Principal("alice"))
    messages = await chat.transcript(conversation_id)
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
    for seqs in _batches(messages).values():
        assert seqs == list(range(seqs[0], seqs[0] + BATCH))
    summary = (await chat.list_conversations()).items[0]
    assert summary.message_count == len(messages)
    assert summary.last_message_preview == (messages[-1].content if messages else None)
    return messages


async def test_threads_each_with_their_own_event_loop(db_url: str) -> None:
    async with ChatMemory.open(db_url) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        run = await chat.start_history(conv.id, model="m")

        async def work(thread: int) -> int:
            for b in range(3):
                await chat.append_messages(run.id, _batch(f"t{thread}b{b}"))
            return len(await chat.transcript(conv.id))

        with ThreadPoolExecutor(4) as pool:
            # A new loop per call, as frameworks' synchronous wrappers do.
            futures = [pool.submit(asyncio.run, work(t)) for t in range(4)]
            seen = await asyncio.to_thread(lambda: [f.result(timeout=120) for f in futures])
        assert all(n >= 3 * BATCH for n in seen)
        messages = await _check_whole(memory, conv.id)
        assert len(messages) == 4 * 3 * BATCH


async def test_close_from_another_event_loop_then_calls_refuse(db_url: str) -> None:
    memory = await ChatMemory.open(db_url)
    chat = memory.scoped(Principal("alice"))
    conv = await chat.start_conversation()
    await asyncio.wait_for(asyncio.to_thread(asyncio.run, memory.close()), timeout=60)
    with pytest.raises(StorageError, match="closed"):
        await chat.get_conversation(conv.id)
    await memory.close()  # idempotent


async def test_cancelled_appends_commit_whole_or_not_at_all(db_url: str, backend: str) -> None:
    rng = random.Random(1234)
    async with ChatMemory.open(db_url) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        run = await chat.start_history(conv.id, model="m")
        settled: dict[str, bool] = {}
        for attempt in range(40):
            tag = f"a{attempt}"
            task = asyncio.create_task(chat.append_messages(run.id, _batch(tag)))
            delay = rng.choice([None, 0, 0, 0.0005, 0.001, 0.002, 0.004])
            if delay is not None:  # None: cancelled before it ever ran
                await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # Once the cancelled caller is back, the outcome is final: whole or absent, for good.
            present = tag in _batches(await chat.transcript(conv.id))
            settled[tag] = present
        assert set(settled.values()) == {True, False}, "cancellations hit both before and after the commit"
        messages = await _check_whole(memory, conv.id)
        assert {tag: tag in _batches(messages) for tag in settled} == settled
        # Nothing is left holding a transaction or a lock: another writer gets in at once.
        await chat.append_messages(run.id, _batch("after"))
        await _assert_no_open_transaction(db_url, backend)


async def test_a_cancelled_caller_is_cancelled_whatever_its_started_write_ends_in(memory: ChatMemory) -> None:
    """A write that has started runs to its end after its caller is cancelled; when it then
    fails, the caller still gets its CancelledError (as asyncio.timeout and task groups need),
    not the write's error."""
    chat = memory.scoped(Principal("alice"))
    conv = await chat.start_conversation()
    done = await chat.start_history(conv.id, model="m")
    await chat.finish_history(done.id)
    started, release = threading.Event(), threading.Event()

    def hold(stmt: Stmt) -> None:
        started.set()
        release.wait(10)

    memory._db.set_trace(hold)
    try:
        # More than a small write, so it runs on the store's own thread, never the caller's.
        late = [{"role": "user", "content": "late"}] * (QUICK_ROWS + 1)
        task = asyncio.create_task(chat.append_messages(done.id, late))
        assert await asyncio.to_thread(started.wait, 10)  # the write is running
        task.cancel()
        await asyncio.sleep(0.01)
        release.set()  # it fails: the history is finished
        await asyncio.wait({task}, timeout=10)
    finally:
        release.set()
        memory._db.set_trace(None)
    assert task.cancelled()
    assert await chat.transcript(conv.id) == []


async def _assert_no_open_transaction(db_url: str, backend: str) -> None:
    url = make_url(db_url)
    if backend == "sqlite":
        other = sqlite3.connect(url.database or "", timeout=0.5, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()
        return
    conn = await asyncpg.connect(
        user=url.username, host=url.query.get("host") or url.host, port=url.port, database=url.database
    )
    try:
        stuck = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
            url.database,
        )
    finally:
        await conn.close()
    assert stuck == 0


async def test_statements_per_append(memory: ChatMemory, backend: str) -> None:
    """PostgreSQL: one statement (lock, checks, insert, counters and change log together), with
    keys or without; a key stored already makes that statement fail, and the append runs again
    as the lock, the keys stored, and nothing more when every key is. SQLite: three on one
    thread hop (the bump answering ``last_seq``, the insert, the change log); keys are looked up
    after the lock (five), and a batch whose keys are all stored is those two alone."""
    chat = memory.scoped(Principal("alice"))
    conv = await chat.start_conversation()
    run = await chat.start_history(conv.id, model="m")
    sent: list[Stmt] = []
    memory._db.set_trace(sent.append)
    try:
        await chat.append_messages(
            run.id, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        )
        keyed = await chat.append_messages(run.id, [{"role": "user", "content": "c", "key": "k"}])
        counts = [len(sent)]
        again = await chat.append_messages(run.id, [{"role": "user", "content": "c", "key": "k"}])
        counts.append(len(sent) - counts[0])
    finally:
        memory._db.set_trace(None)
    assert again == keyed and keyed[0].seq == 3
    if backend == "postgres":
        assert counts == [1 + 1, 1 + 2]
        assert sent[1].unread_keys and not sent[0].unread_keys
    else:
        assert counts == [3 + 5, 2]
        assert sent[1].many and len(sent[1].params) == 2
        assert not any(stmt.unread_keys for stmt in sent)


async def test_sqlite_calls_per_append(tmp_path: Path) -> None:
    """On SQLite an append of a turn is BEGIN IMMEDIATE, one UPDATE, one INSERT per message, one
    INSERT into the change log and COMMIT on the writer's connection: every one a wait for the
    interpreter lock when other threads are busy, so none more than needed."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/calls.db") as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        run = await chat.start_history(conv.id, model="m")
        driver = memory._db._sqlite
        assert driver is not None
        executed: list[str] = []
        writer = driver._write_connection  # opened by the writes above
        assert writer is not None
        writer.set_trace_callback(executed.append)
        try:
            await chat.append_messages(
                run.id, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
            )
        finally:
            writer.set_trace_callback(None)
    words = [statement.split()[0] for statement in executed]
    assert words == ["BEGIN", "UPDATE", "INSERT", "INSERT", "INSERT", "COMMIT"]
    assert "chat_changes" in executed[-2]


async def test_queued_sqlite_writes_commit_together_and_fail_alone(tmp_path: Path) -> None:
    """Writes queued behind a busy writer share one transaction (one COMMIT), in queue order; one
    that fails (a finished history, a foreign one) fails alone and leaves nothing; one whose
    caller gave up before it started is not written."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/group.db") as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        run = await chat.start_history(conv.id, model="m")
        done = await chat.start_history(conv.id, model="m")
        await chat.finish_history(done.id)
        foreign = await memory.scoped(Principal("bob")).start_conversation()
        foreign_run = await memory.scoped(Principal("bob")).start_history(foreign.id, model="m")
        driver = memory._db._sqlite
        assert driver is not None
        writer = driver._write_connection  # opened by the writes above
        assert writer is not None
        executed: list[str] = []
        writer.set_trace_callback(executed.append)
        gate = threading.Event()
        blocked = writer_busy(driver, gate)

        async def append(history_id: Any, text: str) -> list[Message]:
            return await chat.append_messages(history_id, [{"role": "user", "content": text}])

        calls = [
            asyncio.ensure_future(append(hid, text))
            for hid, text in [
                (run.id, "one"),
                (done.id, "refused"),
                (run.id, "withdrawn"),
                (foreign_run.id, "foreign"),
                (run.id, "two"),
            ]
        ]
        await until(lambda: len(driver._queued) == len(calls), "every call queued behind the blocked writer")
        calls[2].cancel()
        await until(calls[2].done, "the cancelled caller withdrew its queued write")
        gate.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        await blocked
        writer.set_trace_callback(None)
        assert isinstance(results[1], ConflictError)
        assert isinstance(results[2], asyncio.CancelledError)
        assert isinstance(results[3], HistoryNotFound)
        assert [m.content for m in await chat.transcript(conv.id)] == ["one", "two"]
        assert [r[0].seq for r in (results[0], results[4]) if isinstance(r, list)] == [1, 2]
        summary = await chat.get_conversation(conv.id)
        assert summary.message_count == 2 and summary.last_message_preview == "two"
        assert sum(statement == "COMMIT" for statement in executed) == 1
        assert executed.count("ROLLBACK TO plan") == 2


async def test_queued_sqlite_history_changes_see_each_other_and_fail_alone(tmp_path: Path) -> None:
    """History starts and changes queued behind a busy writer share one transaction: each sees
    the changes queued before it (a finish answers the model an update just set; a second
    finish finds the history finished), and one refused (a foreign conversation or history, a
    finished history) fails alone with its error, rolled back to its savepoint."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/group.db") as memory:
        chat = memory.scoped(Principal("alice"))
        bob = memory.scoped(Principal("bob"))
        conv = await chat.start_conversation()
        run = await chat.start_history(conv.id, model="m")
        other = await chat.start_history(conv.id, model="m")
        foreign = await bob.start_conversation()
        foreign_run = await bob.start_history(foreign.id, model="m")
        driver = memory._db._sqlite
        assert driver is not None and driver._write_connection is not None
        executed: list[str] = []
        driver._write_connection.set_trace_callback(executed.append)
        gate = threading.Event()
        blocked = writer_busy(driver, gate)
        last = [{"role": "assistant", "content": "bye"}]
        calls = [
            asyncio.ensure_future(call)
            for call in (
                chat.update_history(run.id, model="n"),
                chat.start_history(foreign.id, model="m"),
                chat.finish_history(run.id, usage={"tokens": 2}),
                chat.finish_run(foreign_run.id, messages=last),
                chat.finish_history(run.id, status="cancelled"),
                chat.start_run(conv.id, model="s", messages=[{"role": "user", "content": "hi"}]),
                chat.finish_run(other.id, messages=last, status="failed", error="boom"),
            )
        ]
        await until(lambda: len(driver._queued) == len(calls), "every call queued behind the blocked writer")
        gate.set()
        results: list[Any] = await asyncio.gather(*calls, return_exceptions=True)
        await blocked
        driver._write_connection.set_trace_callback(None)
        assert [type(r).__name__ for r in results] == [
            "History", "ConversationNotFound", "History", "HistoryNotFound", "ConflictError", "RecordedRun",
            "RecordedRun",
        ]  # fmt: skip
        assert str(results[4]) == f"history {run.id} is already completed"
        assert (results[2].model, results[2].status, results[2].usage) == ("n", "completed", {"tokens": 2})
        assert sum(statement == "COMMIT" for statement in executed) == 1
        assert executed.count("ROLLBACK TO plan") == 3
        stored = {h.id: h for h in (await chat.get_conversation(conv.id)).histories}
        assert [stored[h.id].model_dump(exclude={"messages"}) for h in (results[2], results[6].history)] == [
            results[2].model_dump(),
            results[6].history.model_dump(),
        ]
        assert list(stored) == [run.id, other.id, results[5].history.id]
        assert [m.content for m in await chat.transcript(conv.id)] == ["hi", "bye"]
        assert (await bob.get_history(foreign_run.id)).status == "running"
        assert [h.id for h in (await bob.get_conversation(foreign.id)).histories] == [foreign_run.id]


async def test_postgres_call_is_its_statements_only(postgres_url: str) -> None:
    """On PostgreSQL an append is one statement, its own transaction (no BEGIN and COMMIT round
    trips), as is a change to a running history; a read of a page is its one statement (under
    READ COMMITTED a statement inside a transaction reads what it reads alone); a history
    started, with or without its first messages, is one statement too, as are a run finished
    with its last messages and a whole run recorded into a conversation; a run recorded with
    the conversation it starts is two statements in one transaction. A run finished with
    messages that carry keys is one statement too (the keys are not looked up); when one of them
    is stored already, that statement fails, writing nothing, and the finish runs again in a
    transaction that looks the keys up under the lock. The connection goes back to the pool
    without a reset query (a round trip per call)."""
    from tests.conftest import _create_database

    async with ChatMemory.open(await _create_database(postgres_url)) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        run = await chat.start_history(conv.id, model="m")
        # The first append on a connection also reads the array types it binds.
        await chat.append_messages(run.id, [{"role": "user", "content": "warm"}])
        queries = await log_queries(memory)
        await chat.append_messages(run.id, [{"role": "user", "content": "a"}])
        await chat.list_messages(conversation_id=conv.id, newest_first=True)
        await chat.update_history(run.id, model="n")
        await chat.finish_run(run.id, messages=[{"role": "assistant", "content": "b"}])
        await chat.start_run(conv.id, model="m", messages=[{"role": "user", "content": "c", "key": "k"}])
        await chat.start_history(conv.id, model="m")
        await chat.record_run(conv.id, model="m", messages=[{"role": "user", "content": "d"}])
        await chat.record_run(model="m", messages=[{"role": "user", "content": "e"}])
        keyed = await chat.start_history(conv.id, model="m")
        await chat.finish_run(keyed.id, messages=[{"role": "assistant", "content": "f", "key": "f"}])
        resent = await chat.start_run(
            conv.id, model="m", messages=[{"role": "user", "content": "g", "key": "g"}]
        )
        sent_again = [
            {"role": "user", "content": "g", "key": "g"},
            {"role": "assistant", "content": "h", "key": "h"},
        ]
        finished = await chat.finish_run(resent.history.id, messages=sent_again)
        await pool_idle(memory)
    statements = [q.split()[0].rstrip(";") for q in queries]
    assert statements[:7] == ["WITH", "SELECT", "WITH", "WITH", "WITH", "WITH", "WITH"]
    assert statements[7:11] == ["BEGIN", "INSERT", "WITH", "COMMIT"]  # a conversation, then the run
    # A history started; the keyed finish; the next keyed run's start; its finish resending a
    # stored key: the one statement refused, then the lock, the keys stored, the append of the
    # rest and the finish.
    assert statements[11:15] == ["WITH", "WITH", "WITH", "WITH"]
    assert statements[15:] == ["BEGIN", "SELECT", "SELECT", "WITH", "WITH", "COMMIT"]
    assert finished.messages[0].id == resent.messages[0].id
    assert [m.seq for m in finished.messages] == [resent.messages[0].seq, resent.messages[0].seq + 1]


async def test_postgres_append_alone_writes_nothing_when_refused_and_a_plan_may_not_go_on_after_it(
    postgres_url: str,
) -> None:
    """An append sent alone (its own transaction) to a finished or foreign history writes
    nothing; a plan that yields another statement after one it said was its whole write is a
    defect the driver reports rather than runs."""
    from chatmemory import _sql as sql
    from tests.conftest import _create_database

    async with ChatMemory.open(await _create_database(postgres_url)) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        done = await chat.start_history(conv.id, model="m")
        await chat.append_messages(done.id, [{"role": "user", "content": "kept"}])
        await chat.finish_history(done.id)
        queries = await log_queries(memory)
        with pytest.raises(ConflictError):
            await chat.append_messages(done.id, [{"role": "user", "content": "late"}])
        with pytest.raises(HistoryNotFound):
            await memory.scoped(Principal("bob")).append_messages(done.id, [{"role": "user", "content": "x"}])
        await pool_idle(memory)
        assert [q.split()[0] for q in queries][:1] == ["WITH"] and "BEGIN;" not in queries
        assert [m.content for m in await chat.transcript(conv.id)] == ["kept"]
        summary = await chat.get_conversation(conv.id)
        assert (summary.message_count, summary.last_message_preview) == (1, "kept")

        def goes_on() -> Any:
            yield Stmt(sql.UNINDEXED_TAIL, {}, alone=True)
            yield Stmt(sql.UNINDEXED_TAIL, {})

        with pytest.raises(RuntimeError, match="went on after"):
            await memory._db.run(goes_on(), write=True)


async def test_postgres_one_connection_kept_between_threads_and_cancelled_callers_never_hangs(
    postgres_url: str,
) -> None:
    """With a pool of one connection, which the driver keeps between calls, callers on threads
    with their own event loops, reading and appending, some cancelled at random points, all
    finish: a connection given back while another call waits for one goes to that call."""
    from tests.conftest import _create_database

    url = await _create_database(postgres_url)
    async with ChatMemory.open(url, pool_size=1, max_overflow=0) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        run = await chat.start_history(conv.id, model="m")

        async def work(seed: int) -> None:
            rng = random.Random(seed)
            for i in range(8):
                if rng.random() < 0.5:
                    call = asyncio.ensure_future(chat.append_messages(run.id, _batch(f"s{seed}i{i}")))
                else:
                    call = asyncio.ensure_future(chat.list_messages(conversation_id=conv.id, limit=5))
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.choice([0, 0.0005, 0.001, 0.003]))
                    call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call

        errors: list[BaseException] = []

        def caller(seed: int) -> None:
            try:
                asyncio.run(work(seed))
            except BaseException as exc:
                errors.append(exc)

        # Daemon threads: a caller that never finishes fails the test rather than hang it.
        threads = [threading.Thread(target=caller, args=(seed,), daemon=True) for seed in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60

        def join() -> None:
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))

        await asyncio.to_thread(join)
        assert not [thread for thread in threads if thread.is_alive()], "a caller never finished"
        assert not errors, errors
        await _check_whole(memory, conv.id)
        await pool_idle(memory)
    await _assert_no_open_transaction(url, "postgres")
