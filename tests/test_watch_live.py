"""Watching across processes, threads and event loops; closing; a caller's engine; purging.

Where a test checks that a wakeup arrived, watchers' own periodic re-read is pushed far out,
so only the wakeup under test can deliver the event in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import threading
from collections.abc import Collection
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import func, select

from chatmemory import (
    ChangeEvent,
    ChatMemory,
    ConversationNotFound,
    InvalidInputError,
    NewMessage,
    Principal,
    StorageError,
    _wakeup,
)
from chatmemory._changes import parse_cursor
from chatmemory._db import create_engine
from chatmemory._plan import Stmt
from chatmemory._schema import changes
from chatmemory.scope import Scope
from tests.test_postgres_group_commit import until
from tests.test_watch import WAIT, take

WRITER = """
import asyncio, sys
from chatmemory import ChatMemory, NewMessage, Principal

async def main(url: str, history_id: str) -> None:
    async with ChatMemory.open(url, migrate=False) as memory:
        chat = memory.scoped(Principal("alice"))
        for i in range(3):
            await chat.append_messages(history_id, [NewMessage("user", f"from afar {i}")])
            await asyncio.sleep(0.05)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture
def no_rescan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_wakeup, "RESCAN_SECONDS", 600.0)


@pytest.mark.usefixtures("no_rescan")
async def test_a_change_committed_by_another_process_arrives(
    memory: ChatMemory, alice: Scope, db_url: str
) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    cursor = await alice.change_cursor(conv.id)
    postgres = memory._db._postgres
    async with aclosing(alice.watch(conv.id, after=cursor)) as events:
        # Bounded from the writer's exit: starting a process may take long on a busy machine.
        first = asyncio.ensure_future(take(events, 3, seconds=None))
        await until(
            lambda: bool(memory._db.changes._waiters) and (postgres is None or postgres.listening),
            "watching (and, on PostgreSQL, listening) before the writer starts",
        )
        writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, db_url, str(run.id))
        assert await asyncio.wait_for(writer.wait(), 60) == 0
        got = await asyncio.wait_for(first, WAIT)
    assert [e.message.content for e in got if e.message] == [f"from afar {i}" for i in range(3)]
    assert [e.seq for e in got] == [1, 2, 3]


class _FailingOnce:
    """A connection whose next statement fails while ``fail`` is set (then clears it)."""

    def __init__(self, connection: sqlite3.Connection, fail: threading.Event) -> None:
        self.connection, self.fail = connection, fail

    def execute(self, *args: Any) -> sqlite3.Cursor:
        if self.fail.is_set():
            self.fail.clear()
            raise sqlite3.OperationalError("disk I/O error")
        return self.connection.execute(*args)

    def close(self) -> None:
        self.connection.close()


@pytest.mark.usefixtures("no_rescan")
async def test_changes_of_another_process_arrive_after_the_poller_met_a_database_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail = threading.Event()
    opened: list[_FailingOnce] = []

    def connect(*args: Any, **kwargs: Any) -> _FailingOnce:
        opened.append(_FailingOnce(sqlite3.connect(*args, **kwargs), fail))
        return opened[-1]

    monkeypatch.setattr(_wakeup, "sqlite3", SimpleNamespace(connect=connect, Error=sqlite3.Error))
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    async with ChatMemory.open(url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        async with aclosing(alice.watch(conv.id, after=await alice.change_cursor(conv.id))) as events:
            first = asyncio.ensure_future(take(events, 3, seconds=None))
            await until(lambda: bool(opened), "polling")
            fail.set()
            await until(lambda: not fail.is_set(), "the poller's statement failed")
            writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, url, str(run.id))
            assert await asyncio.wait_for(writer.wait(), 60) == 0
            got = await asyncio.wait_for(first, WAIT)
    assert [e.seq for e in got] == [1, 2, 3]
    assert len(opened) == 2  # polling went on, on a new connection


@pytest.mark.usefixtures("no_rescan")
async def test_a_run_ended_and_one_recorded_by_another_store_arrive(
    memory: ChatMemory, alice: Scope, db_url: str
) -> None:
    """A run's end with its last messages and a run recorded into the conversation, written
    by another store (on PostgreSQL each one statement that logs and notifies itself), wake
    this store's watcher."""
    conv = await alice.start_conversation()
    run = await alice.start_run(conv.id, model="m", messages=[])
    cursor = await alice.change_cursor(conv.id)
    postgres = memory._db._postgres
    async with ChatMemory.open(db_url) as other, aclosing(alice.watch(conv.id, after=cursor)) as events:
        elsewhere = other.scoped(Principal("alice"))
        first = asyncio.ensure_future(take(events, 2, seconds=None))
        await until(
            lambda: bool(memory._db.changes._waiters) and (postgres is None or postgres.listening),
            "watching (and, on PostgreSQL, listening) before the other store writes",
        )
        await elsewhere.finish_run(run.history.id, messages=[NewMessage("assistant", "ended")])
        ended = await asyncio.wait_for(first, WAIT)
        second = asyncio.ensure_future(take(events, 3, seconds=None))
        await until(lambda: bool(memory._db.changes._waiters), "watching again")
        recorded = await elsewhere.record_run(conv.id, model="r", messages=[NewMessage("user", "recorded")])
        got = await asyncio.wait_for(second, WAIT)
    assert [(e.kind, e.seq) for e in ended] == [("message.appended", 1), ("history.finished", None)]
    assert [(e.kind, e.seq) for e in got] == [
        ("history.started", None),
        ("message.appended", 2),
        ("history.finished", None),
    ]
    assert {e.history_id for e in got} == {recorded.history.id}


@pytest.mark.usefixtures("no_rescan")
async def test_a_caller_engine_polls_at_its_interval(memory: ChatMemory, alice: Scope, db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with ChatMemory(engine, watch_interval=0.05) as wrapped:
            chat = wrapped.scoped(Principal("alice"))
            conv = await alice.start_conversation()
            cursor = await chat.change_cursor(conv.id)
            async with aclosing(chat.watch(conv.id, after=cursor)) as events:
                pending = asyncio.ensure_future(take(events, 1))
                await asyncio.sleep(0.1)
                await alice.update_conversation(conv.id, title="elsewhere")
                (event,) = await pending
            assert event.kind == "conversation.updated"
    finally:
        await engine.dispose()


def _watch_on_own_loop(chat: Scope, cursor: str, n: int, started: threading.Event) -> list[ChangeEvent]:
    async def go() -> list[ChangeEvent]:
        async with aclosing(chat.watch(after=cursor)) as events:
            started.set()
            return await take(events, n)

    return asyncio.run(go())


async def test_a_watcher_on_another_thread_and_loop(alice: Scope) -> None:
    cursor = await alice.change_cursor()
    started = threading.Event()
    loop = asyncio.get_running_loop()
    watching = loop.run_in_executor(None, _watch_on_own_loop, alice, cursor, 4, started)
    await asyncio.to_thread(started.wait, WAIT)
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", "a"), NewMessage("user", "b")])
    got = await asyncio.wait_for(watching, WAIT)
    assert [(e.kind, e.seq) for e in got] == [
        ("conversation.created", None),
        ("history.started", None),
        ("message.appended", 1),
        ("message.appended", 2),
    ]


def _wait_on_own_loop(chat: Scope, cursor: str, started: threading.Event) -> BaseException | None:
    async def go() -> None:
        async for _event in chat.watch(after=cursor):
            pass

    async def run() -> BaseException | None:
        task = asyncio.ensure_future(go())
        await asyncio.sleep(0.1)
        started.set()
        try:
            await asyncio.wait_for(task, WAIT)
        except (StorageError, TimeoutError) as exc:
            return exc
        return None

    return asyncio.run(run())


async def test_close_ends_every_watcher_promptly(db_url: str) -> None:
    memory = await ChatMemory.open(db_url)
    chat = memory.scoped(Principal("alice"))
    cursor = await chat.change_cursor()
    here = asyncio.ensure_future(anext(chat.watch(after=cursor)))
    started = threading.Event()
    there = asyncio.get_running_loop().run_in_executor(None, _wait_on_own_loop, chat, cursor, started)
    await asyncio.to_thread(started.wait, WAIT)
    await asyncio.sleep(0.1)
    begun = asyncio.get_running_loop().time()
    await asyncio.wait_for(memory.close(), WAIT)
    with pytest.raises(StorageError):
        await asyncio.wait_for(here, WAIT)
    assert isinstance(await asyncio.wait_for(there, WAIT), StorageError)
    assert asyncio.get_running_loop().time() - begun < 5
    with pytest.raises(StorageError):
        await anext(chat.watch())


async def _change_rows(memory: ChatMemory, conversation_id: UUID) -> int:
    async with memory.engine.connect() as conn:
        query = select(func.count()).where(changes.c.chat_conversation_id == conversation_id)
        return int((await conn.execute(query)).scalar_one())


async def test_purging_a_conversation_removes_its_changes(
    memory: ChatMemory, alice: Scope, admin: Scope
) -> None:
    start = await alice.change_cursor()
    gone = await alice.start_conversation()
    kept = await alice.start_conversation()
    await alice.delete_conversation(gone.id)
    assert await _change_rows(memory, gone.id) == 2
    await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(seconds=1))
    assert await _change_rows(memory, gone.id) == 0
    # A sidebar from before them cannot get them, nor can the watch of a conversation begun
    # after that cursor (it might be one purged and restored since): each is told to reload.
    for scope_id in (None, kept.id):
        with pytest.raises(InvalidInputError) as err:
            await anext(alice.watch(scope_id, after=start))
        assert err.value.field == "after"
    async with aclosing(alice.watch(after=await alice.change_cursor())) as events:
        await alice.update_conversation(kept.id, title="after the purge")
        (left,) = await take(events, 1)
    assert (left.kind, left.conversation_id) == ("conversation.updated", kept.id)
    with pytest.raises(ConversationNotFound):
        await anext(alice.watch(gone.id, after=start))


async def test_a_sidebar_read_moves_past_changes_it_cannot_see(
    memory: ChatMemory, alice: Scope, bob: Scope
) -> None:
    """Reads start after every change already looked at, so others' changes are read past once."""
    reads: list[int] = []

    def trace(stmt: Stmt) -> None:
        if isinstance(stmt.params, dict) and "after" in stmt.params and "chat_changes" in stmt.sql.sqlite:
            reads.append(stmt.params["after"])

    cursor = await bob.change_cursor()
    async with aclosing(bob.watch(after=cursor)) as events:
        waiting = asyncio.ensure_future(anext(events))
        memory._db.set_trace(trace)
        try:
            for _ in range(3):
                await alice.start_conversation()
            head = parse_cursor(await alice.change_cursor())[0]
            await until(lambda: bool(reads) and reads[-1] == head, "a read after the last change")
        finally:
            memory._db.set_trace(None)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    assert reads[0] == parse_cursor(cursor)[0] and reads[-1] == head


@pytest.mark.usefixtures("no_rescan")
async def test_a_conversation_watch_wakes_only_for_its_conversation(
    memory: ChatMemory, alice: Scope, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits to other conversations, here or in another process, cost its watcher no read."""
    watched, busy, first = [await alice.start_conversation() for _ in range(3)]
    run = await alice.start_history(busy.id, model="m")
    reads: list[object] = []

    def trace(stmt: Stmt) -> None:
        if isinstance(stmt.params, dict) and "after" in stmt.params and "chat_changes" in stmt.sql.sqlite:
            reads.append(stmt.params["cid"])

    # The store's first watcher starts what notices other processes' commits (the SQLite
    # poller, the PostgreSQL listener), which then wakes every watcher once. That first
    # watcher is done reading before the watcher under test starts.
    hub, woken_all = memory._db.changes, threading.Event()
    notify = hub.notify

    def noting(conversation_ids: Collection[UUID] | None = None) -> None:
        notify(conversation_ids)
        if conversation_ids is None:
            woken_all.set()

    monkeypatch.setattr(hub, "notify", noting)
    async with aclosing(alice.watch(first.id, after=await alice.change_cursor(first.id))) as starter:
        started = asyncio.ensure_future(anext(starter))
        assert await asyncio.to_thread(woken_all.wait, WAIT)
        await alice.update_conversation(first.id, title="started")
        await asyncio.wait_for(started, WAIT)  # and it is not asked for more
        cursor = await alice.change_cursor(watched.id)
        memory._db.set_trace(trace)
        try:
            async with aclosing(alice.watch(watched.id, after=cursor)) as events:
                waiting = asyncio.ensure_future(anext(events))
                await until(lambda: reads == [watched.id], "the watcher's first read")
                reads.clear()
                await alice.append_messages(run.id, [NewMessage("user", "elsewhere")])
                await alice.update_conversation(busy.id, title="busy")
                await asyncio.sleep(0.3)
                assert reads == []
                await alice.update_conversation(watched.id, title="mine")
                event = await asyncio.wait_for(waiting, WAIT)
        finally:
            memory._db.set_trace(None)
    assert event.kind == "conversation.updated" and reads == [watched.id]


async def test_a_watcher_cancelled_as_it_is_woken_stops(memory: ChatMemory, alice: Scope) -> None:
    cursor = await alice.change_cursor()
    for delay in range(6):
        watching = asyncio.ensure_future(anext(alice.watch(after=cursor)))
        await asyncio.sleep(0.05)  # waiting for a wakeup
        memory._db.changes.notify()
        for _ in range(delay):
            await asyncio.sleep(0)
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(watching, WAIT)


@pytest.mark.usefixtures("no_rescan")
async def test_a_sidebar_stops_waking_for_conversations_it_cannot_see(
    memory: ChatMemory, alice: Scope, bob: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server holds many users' sidebars: each commit to one user's conversation must not make
    every other user's sidebar read. Woken once for a conversation it cannot see, a sidebar
    learns it, and later commits to it cost that sidebar no read; its own still arrive."""
    theirs = await bob.start_conversation()
    run = await bob.start_history(theirs.id, model="m")
    reads: list[int] = []

    def trace(stmt: Stmt) -> None:
        if isinstance(stmt.params, dict) and "after" in stmt.params and "chat_changes" in stmt.sql.sqlite:
            reads.append(stmt.params["after"])

    # The SQLite poller or the PostgreSQL listener wakes every watcher once as it starts, which
    # may be late on a busy machine: that wakeup is on the loop before ``woken_all`` is set.
    hub, woken_all, loop = memory._db.changes, asyncio.Event(), asyncio.get_running_loop()
    notify = hub.notify

    def noting(conversation_ids: Collection[UUID] | None = None) -> None:
        notify(conversation_ids)
        if conversation_ids is None:
            loop.call_soon_threadsafe(woken_all.set)

    monkeypatch.setattr(hub, "notify", noting)

    def learnt() -> bool:
        """Whether the sidebar learnt it cannot see theirs, and waits with no wakeup pending."""
        (waiter,) = hub._waiters
        woken = waiter._event
        return theirs.id in waiter._hidden and not woken.is_set() and bool(woken._waiters)

    async with aclosing(alice.watch(after=await alice.change_cursor())) as events:
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.wait_for(woken_all.wait(), WAIT)
        await bob.append_messages(run.id, [NewMessage("user", "first")])  # read once, and learnt
        await until(learnt, "the first read, and those the poller or listener start asks for")
        memory._db.set_trace(trace)
        try:
            for i in range(5):
                await bob.append_messages(run.id, [NewMessage("user", str(i))])
                await bob.update_conversation(theirs.id, title=str(i))
            await asyncio.sleep(0.3)
            assert reads == []
            mine = await alice.start_conversation()
            event = await asyncio.wait_for(waiting, WAIT)
        finally:
            memory._db.set_trace(None)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
    assert (event.kind, event.conversation_id) == ("conversation.created", mine.id)
