"""A write blocked by a lock another session holds fails after the store's lock timeout, as a
SQLite write waits for another process's for its busy timeout: neither it nor a cancelled caller
waiting for its outcome waits forever on a transaction left open elsewhere."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from uuid import UUID

import pytest
from sqlalchemy import make_url

from chatmemory import ChatMemory, Principal, StorageError
from tests._postgres import _connect, until_waiting_for_a_lock

# Far above the patched timeouts below: a call still waiting then waits on the lock for good.
HANG = 20.0
HI = {"role": "user", "content": "hi"}


@pytest.fixture(autouse=True)
def short_lock_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("chatmemory._sqlite_driver.BUSY_TIMEOUT_MS", 300)
    monkeypatch.setattr("chatmemory._postgres_driver.LOCK_TIMEOUT_MS", 300)


@asynccontextmanager
async def locked_elsewhere(db_url: str, conversation_id: UUID) -> AsyncIterator[None]:
    """Another session's open transaction holding what an append to the conversation must lock:
    on PostgreSQL the conversation's row, on SQLite the database's write lock."""
    if db_url.startswith("sqlite"):
        other = sqlite3.connect(str(make_url(db_url).database), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    connection = await _connect(db_url)
    try:
        async with connection.transaction():
            lock = "SELECT 1 FROM chat_conversations WHERE id = $1 FOR UPDATE"
            await connection.execute(lock, conversation_id)
            yield
    finally:
        await connection.close()


@pytest.mark.parametrize("cancelled", [False, True], ids=["awaited", "cancelled"])
async def test_a_write_blocked_by_another_sessions_lock_ends_after_the_lock_timeout(
    db_url: str, cancelled: bool
) -> None:
    """An append waiting on the lock fails with StorageError; a cancelled caller of it, which
    waits for its outcome, gets its cancellation then. Either way nothing was written."""
    async with ChatMemory.open(db_url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        async with locked_elsewhere(db_url, conv.id):
            blocked = asyncio.ensure_future(alice.append_messages(run.id, [HI]))
            if cancelled:
                await asyncio.sleep(0.05)  # started, and waiting on the lock
                blocked.cancel()
            done, _ = await asyncio.wait({blocked}, timeout=HANG)
            assert done, "the append still waits on the lock"
            if cancelled:
                assert blocked.cancelled()
            else:
                with pytest.raises(StorageError, match=r"(?i)lock"):
                    blocked.result()
        assert await alice.transcript(conv.id) == []
        assert (await alice.get_conversation(conv.id)).message_count == 0
        stored = await alice.append_messages(run.id, [{"role": "user", "content": "again"}])
        assert [m.seq for m in stored] == [1]


async def test_a_purge_blocked_by_another_sessions_lock_fails_after_the_lock_timeout(db_url: str) -> None:
    async with ChatMemory.open(db_url) as memory:
        alice = memory.scoped(Principal("alice"))
        admin = memory.scoped(Principal("admin", admin=True))
        conv = await alice.start_conversation()
        await alice.delete_conversation(conv.id)
        now = datetime.now(UTC)
        async with locked_elsewhere(db_url, conv.id):
            failing = asyncio.ensure_future(admin.purge_deleted(deleted_before=now))
            cancelled = asyncio.ensure_future(admin.purge_deleted(deleted_before=now))
            await asyncio.sleep(0.05)
            cancelled.cancel()
            done, _ = await asyncio.wait({failing, cancelled}, timeout=HANG)
            assert done == {failing, cancelled}, "a purge still waits on the lock"
            with pytest.raises(StorageError, match=r"(?i)lock"):
                failing.result()
            assert cancelled.cancelled()
        assert (await admin.purge_deleted(deleted_before=now)).conversations == 1


@pytest.mark.parametrize(
    "delays",
    [(0.0, 0.1, 0.1, 0.1, 0.1), (0.0, 0.1, 1.2, 2.3), (0.0, 0.05, 0.9)],
    ids=["queued together", "queued one after another", "queued together, made apart"],
)
async def test_each_write_waits_for_a_lock_held_elsewhere_at_most_the_timeout_from_its_own_call(
    db_url: str, monkeypatch: pytest.MonkeyPatch, delays: tuple[float, ...]
) -> None:
    """Writes made while earlier ones wait on the lock each fail about the lock timeout after
    they were made. A write queued behind one that waited used to start a wait of its own only
    then (twice the timeout, and more for every write queued behind), and on PostgreSQL the
    writes queued together waited in turn (the fifth five times the timeout)."""
    timeout = 1.0
    monkeypatch.setattr("chatmemory._sqlite_driver.BUSY_TIMEOUT_MS", int(timeout * 1000))
    monkeypatch.setattr("chatmemory._postgres_driver.LOCK_TIMEOUT_MS", int(timeout * 1000))
    async with ChatMemory.open(db_url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        loop = asyncio.get_running_loop()

        async def append_after(delay: float) -> float:
            await asyncio.sleep(delay)
            made = loop.time()
            with pytest.raises(StorageError, match=r"(?i)lock"):
                await alice.append_messages(run.id, [HI])
            return loop.time() - made

        async with locked_elsewhere(db_url, conv.id):
            waits = await asyncio.wait_for(asyncio.gather(*(append_after(delay) for delay in delays)), HANG)
        assert max(waits) < 1.5 * timeout, waits
        assert await alice.transcript(conv.id) == []


@pytest.mark.parametrize("write", ["finish_run", "append_messages"])
async def test_a_write_cancelled_while_waiting_for_a_pooled_connection_is_withdrawn(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """Every pooled connection is taken by a call waiting on a lock held elsewhere; a write to
    another conversation waits for a connection. Its caller gives up: the write has not started,
    so it is withdrawn at once and never runs. Before: the caller's one-second timeout
    took the whole lock wait, and the write was then committed anyway."""
    from tests.conftest import _create_database

    monkeypatch.setattr("chatmemory._postgres_driver.LOCK_TIMEOUT_MS", 5000)
    db_url = await _create_database(postgres_url)
    async with ChatMemory.open(db_url, pool_size=1) as memory:
        alice = memory.scoped(Principal("alice"))
        held, other = await alice.start_conversation(), await alice.start_conversation()
        run = await alice.start_history(other.id, model="m")
        async with locked_elsewhere(db_url, held.id):
            blocked = asyncio.ensure_future(alice.update_conversation(held.id, title="blocked"))
            await until_waiting_for_a_lock(db_url)
            loop = asyncio.get_running_loop()
            started = loop.time()
            call = (
                alice.finish_run(run.id, messages=[HI])
                if write == "finish_run"
                else alice.append_messages(run.id, [HI])
            )
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call, 0.5)
            assert loop.time() - started < 2.5
        await blocked  # the lock let go before its wait ran out
        await asyncio.sleep(0.2)  # a write wrongly still queued would have its connection by now
        stored = await alice.get_history(run.id)
        assert (stored.status, stored.messages) == ("running", [])


async def test_a_write_that_waited_its_time_for_a_pooled_connection_still_waits_out_a_moments_lock(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append waits for the pool's only connection past its whole lock wait (a call holding
    it waits on a lock held elsewhere); once it has the connection, its own conversation's row
    is locked elsewhere for a moment. Before: it then ran with a lock wait of 1 ms and
    failed on that moment's contention; it gets at least a thirtieth of the lock timeout."""
    from tests.conftest import _create_database

    monkeypatch.setattr("chatmemory._postgres_driver.LOCK_TIMEOUT_MS", 6000)  # at least 200 ms each
    db_url = await _create_database(postgres_url)
    async with ChatMemory.open(db_url, pool_size=1) as memory:
        alice = memory.scoped(Principal("alice"))
        held, mine = await alice.start_conversation(), await alice.start_conversation()
        run = await alice.start_history(mine.id, model="m")
        async with locked_elsewhere(db_url, held.id):
            # Made one after the other: the update takes the connection and waits on the lock.
            blocked = asyncio.ensure_future(alice.update_conversation(held.id, title="blocked"))
            append = asyncio.ensure_future(alice.append_messages(run.id, [HI]))
            async with locked_elsewhere(db_url, mine.id):
                with pytest.raises(StorageError, match=r"(?i)lock"):
                    await blocked  # after 6 s: the append has waited that long for the connection
                await asyncio.sleep(0.03)  # a moment's contention, then the row is free
        assert [m.content for m in await asyncio.wait_for(append, 10)] == ["hi"]


async def test_writes_queued_behind_a_lock_held_all_along_fail_together_at_the_timeout(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many writes queued while another session holds the lock all along: all fail about the
    lock timeout after their calls. Before: the second's floor a write gets for a
    moment's contention was taken again by each queued group on SQLite (by each write of a
    group on PostgreSQL), so the last failed seconds later."""
    timeout = 3.0  # a floor of 100 ms
    monkeypatch.setattr("chatmemory._sqlite_driver.BUSY_TIMEOUT_MS", int(timeout * 1000))
    monkeypatch.setattr("chatmemory._postgres_driver.LOCK_TIMEOUT_MS", int(timeout * 1000))
    # SQLite: ten groups of 32 queued writes; PostgreSQL: thirty writes sharing savepoints.
    writes = 320 if db_url.startswith("sqlite") else 30
    async with ChatMemory.open(db_url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        loop = asyncio.get_running_loop()
        made = loop.time()
        async with locked_elsewhere(db_url, conv.id):
            outcomes = await asyncio.wait_for(
                asyncio.gather(
                    *(alice.append_messages(run.id, [HI]) for _ in range(writes)), return_exceptions=True
                ),
                HANG,
            )
            took = loop.time() - made
        assert all(isinstance(outcome, StorageError) for outcome in outcomes)
        assert took < timeout + 0.6, took
