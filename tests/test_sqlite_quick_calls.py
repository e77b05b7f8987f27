"""SQLite: a small call runs on its caller's own thread when it can start at once, and on the
store's threads whenever it would wait (another process writing, a write queued before it) or is
large. Whichever thread runs it, the caller's event loop is never blocked on a lock, and a small
write never goes ahead of one queued before it."""

from __future__ import annotations

import asyncio
import base64
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chatmemory import ChatMemory, Conversation, History, NewMessage, Principal, StorageError, _sqlite_driver
from chatmemory._db import QUICK_ROWS, SQLITE_BUSY_TIMEOUT_MS
from chatmemory._plan import Plan, Stmt
from chatmemory._sql import SQL
from chatmemory._sqlite_driver import SQLiteDriver
from chatmemory.scope import Scope
from tests.test_postgres_group_commit import until


async def _conversation_with_a_run(memory: ChatMemory) -> tuple[Scope, Conversation, History]:
    chat = memory.scoped(Principal("alice"))
    conv = await chat.start_conversation()
    return chat, conv, await chat.start_history(conv.id, model="m")


def _statement_threads(memory: ChatMemory) -> list[str]:
    """The thread each statement the store sends from now on runs on, by name."""
    threads: list[str] = []
    memory._db.set_trace(lambda stmt: threads.append(threading.current_thread().name))
    return threads


def _driver(memory: ChatMemory) -> SQLiteDriver:
    driver = memory._db._sqlite
    assert driver is not None
    return driver


async def test_small_calls_run_on_the_callers_thread_and_large_ones_on_the_stores(tmp_path: Path) -> None:
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        threads = _statement_threads(memory)
        here = threading.current_thread().name

        await chat.append_messages(run.id, [NewMessage("user", "hi"), NewMessage("assistant", "hello")])
        await chat.list_messages(conversation_id=conv.id, limit=QUICK_ROWS)
        await chat.get_history(run.id, messages=False)
        assert threads and set(threads) == {here}

        threads.clear()
        await chat.append_messages(run.id, [NewMessage("user", f"m{i}") for i in range(QUICK_ROWS + 1)])
        await chat.list_messages(conversation_id=conv.id, limit=QUICK_ROWS + 1)
        await chat.transcript(conv.id)
        assert threads and here not in threads
        assert len(await chat.transcript(conv.id)) == QUICK_ROWS + 3


async def test_a_small_write_waits_for_another_process_on_the_stores_thread(tmp_path: Path) -> None:
    """Another connection (as another process) holds the write lock: the append does not wait
    for it on the caller's thread, whose event loop goes on; it commits once the lock is free."""
    path = tmp_path / "t.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        try:
            begun = loop.time()
            append = asyncio.ensure_future(chat.append_messages(run.id, [NewMessage("user", "waited")]))
            # This loop runs meanwhile: the append waits on the writer thread, in SQLite's busy
            # wait (which would have held this loop for the whole busy timeout).
            await until(lambda: _driver(memory)._pending == 1, "the append waiting on the writer thread")
            assert loop.time() - begun < SQLITE_BUSY_TIMEOUT_MS / 1000 / 2
            await asyncio.sleep(0.05)
            assert not append.done()
        finally:
            other.execute("ROLLBACK")
            other.close()
        stored = await asyncio.wait_for(append, 30)
        assert [m.content for m in stored] == ["waited"]
        assert [m.content for m in await chat.transcript(conv.id)] == ["waited"]


async def test_a_small_read_beside_another_processs_write_runs_at_once(tmp_path: Path) -> None:
    """WAL: a read never waits for a writer, so it runs on the caller's thread and sees the
    last commit, not the other process's open transaction."""
    path = tmp_path / "t.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        chat = memory.scoped(Principal("alice"))
        await chat.start_conversation(title="before")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE chat_conversations SET title = 'uncommitted'")
        threads = _statement_threads(memory)
        try:
            page = await asyncio.wait_for(chat.list_conversations(limit=10), 5)
            assert [c.title for c in page.items] == ["before"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert set(threads) == {threading.current_thread().name}


async def test_a_small_write_never_goes_ahead_of_one_queued_before_it(tmp_path: Path) -> None:
    """The first append finds the writer connection taken (as by another thread's write) and
    queues; the second comes once the connection is free again but before the writer thread
    has taken the first: it queues behind it rather than run at once."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        driver = _driver(memory)
        gate = threading.Event()
        writer_thread_busy = asyncio.wrap_future(driver._writer.submit(gate.wait, 30))
        with driver._writing:
            first = asyncio.ensure_future(chat.append_messages(run.id, [NewMessage("user", "first")]))
            await until(lambda: driver._pending == 1, "the first append queued")
        second = asyncio.ensure_future(chat.append_messages(run.id, [NewMessage("user", "second")]))
        await until(lambda: driver._pending == 2, "the second append queued")
        gate.set()
        assert await writer_thread_busy
        stored = await asyncio.gather(first, second)
        assert stored[0][0].seq < stored[1][0].seq
        assert [m.content for m in await chat.transcript(conv.id)] == ["first", "second"]


async def test_small_writes_from_many_threads_at_once_lose_nothing(tmp_path: Path) -> None:
    """Threads, each with its own event loop, append at once: each either runs its write on
    its own thread, or queues it when the writer connection is taken; every message is stored
    once, each thread's in its order."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        ran_on: set[str] = set()
        memory._db.set_trace(lambda stmt: ran_on.add(threading.current_thread().name))

        def writer(k: int) -> None:
            async def appends() -> None:
                for i in range(40):
                    await chat.append_messages(run.id, [NewMessage("user", f"{k}:{i}")])

            asyncio.run(appends())

        threads = [threading.Thread(target=writer, args=(k,), name=f"caller-{k}") for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        stored = [m.content for m in await chat.transcript(conv.id)]
        assert sorted(stored) == sorted(f"{k}:{i}" for k in range(4) for i in range(40))
        for k in range(4):
            assert [s for s in stored if s.startswith(f"{k}:")] == [f"{k}:{i}" for i in range(40)]
        assert any(name.startswith("caller-") for name in ran_on)


async def test_a_failed_small_write_leaves_nothing_and_the_next_one_runs(tmp_path: Path) -> None:
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        failing = {"n": 0}

        def fail_on_insert(stmt: Stmt) -> None:
            if "INSERT INTO chat_messages" in stmt.sql.sqlite and failing["n"] == 0:
                failing["n"] += 1
                raise sqlite3.OperationalError("disk I/O error")

        memory._db.set_trace(fail_on_insert)
        with pytest.raises(StorageError, match="disk I/O error"):
            await chat.append_messages(run.id, [NewMessage("user", "lost")])
        memory._db.set_trace(None)
        await chat.append_messages(run.id, [NewMessage("user", "kept")])
        assert [m.content for m in await chat.transcript(conv.id)] == ["kept"]
        assert (await chat.get_conversation(conv.id)).message_count == 1


# Another process takes SQLite's PENDING lock byte of the file (as one does on its way to an
# exclusive lock, closing its last connection for instance), for at most 5 s: a connection
# opening meanwhile in a process that holds no lock on the file yet is refused the shared lock
# its first read takes.
_HOLD_PENDING = """
import fcntl, os, select, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0x40000000)
print("held", flush=True)
select.select([sys.stdin], [], [], 5)
"""


def test_a_connection_that_does_not_wait_fails_at_once_while_opening(tmp_path: Path) -> None:
    """A quick call opens its connection on its caller's thread: opening must not wait for a
    lock there either (it would hold the caller's event loop for up to the busy timeout)."""
    path = tmp_path / "t.db"
    _sqlite_driver.connect(str(path)).close()  # a WAL database, no connection left open
    command = [sys.executable, "-c", _HOLD_PENDING, str(path)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as other:
        assert other.stdin is not None and other.stdout is not None
        assert other.stdout.readline().strip() == "held"
        begun = time.monotonic()
        with pytest.raises(sqlite3.OperationalError) as refused:
            _sqlite_driver.connect(str(path), wait=False).close()
        assert _sqlite_driver._busy(refused.value)
        assert time.monotonic() - begun < 2
        other.stdin.close()  # lets it go
    _sqlite_driver.connect(str(path), wait=False).close()  # and opens once the lock is free


async def test_calls_that_read_a_whole_conversation_run_on_the_stores_threads(tmp_path: Path) -> None:
    """A call is small by the rows it touches, not by what it returns: a conversation's
    detail reads every history of it; a tail since a time reads back until it has its limit
    (creation times need not follow ``seq``), through every message older than that time.
    Past ``QUICK_ROWS`` of those, neither runs on the caller's thread (whose event loop it
    would hold meanwhile). Deleting, completing, failing or replacing a message touches only
    those messages and the conversation's row (its count is adjusted, not counted again), so
    those do."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        for _ in range(QUICK_ROWS + 1):
            run = await chat.start_history(conv.id, model="m")
        stored = await chat.append_messages(
            run.id,
            [NewMessage("user", f"m{i}") for i in range(QUICK_ROWS)]
            + [NewMessage("assistant", "", status="pending") for _ in range(2)],
        )
        threads = _statement_threads(memory)
        here = threading.current_thread().name

        large = {
            "get_conversation": lambda: chat.get_conversation(conv.id),
            "get_tail since": lambda: chat.get_tail(conv.id, limit=10, since=datetime.now(UTC)),
        }
        for name, call in large.items():
            threads.clear()
            await call()
            assert threads and here not in threads, name
        small = {
            "complete_message": lambda: chat.complete_message(stored[-2].id, content="done"),
            "fail_message": lambda: chat.fail_message(stored[-1].id, error="no"),
            "delete_message": lambda: chat.delete_message(stored[0].id),
            "replace_messages": lambda: chat.replace_messages(conv.id, replacing=[stored[-1].id]),
        }
        for name, call in small.items():
            threads.clear()
            await call()
            assert threads and set(threads) == {here}, name
        assert (await chat.get_conversation(conv.id)).message_count == QUICK_ROWS


class _FailingOnce:
    """A connection whose first statement matching ``sql`` fails with ``error`` once it has run."""

    def __init__(self, connection: sqlite3.Connection, sql: str, error: BaseException) -> None:
        self._connection, self._sql, self._error = connection, sql, error

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        cursor = self._connection.execute(sql, *args)
        if sql == self._sql and self._error is not None:
            error, self._error = self._error, None  # type: ignore[assignment]
            raise error
        return cursor

    def __getattr__(self, name: str) -> object:
        return getattr(self._connection, name)


async def test_a_quick_read_that_fails_as_it_begins_leaves_no_transaction_open(tmp_path: Path) -> None:
    """Whatever fails while a quick read takes its snapshot (here a corrupt page), the read
    fails alone: its connection is left outside any transaction, so the next read runs (and no
    snapshot left open keeps checkpoints from finishing the WAL)."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat = memory.scoped(Principal("alice"))
        await chat.start_conversation(title="here")
        await chat.list_conversations()  # the quick reader opens
        driver = _driver(memory)
        reader = driver._quick_reader
        assert reader is not None
        failing = _FailingOnce(
            reader, "PRAGMA schema_version", sqlite3.DatabaseError("database disk image is malformed")
        )
        driver._quick_reader = failing  # type: ignore[assignment]
        with pytest.raises(StorageError, match="malformed"):
            await chat.list_conversations()
        assert not reader.in_transaction
        assert [c.title for c in (await chat.list_conversations()).items] == ["here"]


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
async def test_small_calls_in_a_row_let_the_loops_other_work_run(tmp_path: Path, write: bool) -> None:
    """Calls that run on their caller's thread still let the event loop run its other work
    (at least every millisecond), as calls awaiting another thread do: a task polling the
    store in a loop never holds up the loop (here, the work that would end its polling, which
    would hang it)."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        threads = _statement_threads(memory)
        ended = asyncio.Event()
        asyncio.get_running_loop().call_soon(ended.set)
        polls = 0
        while not ended.is_set() and polls < 10_000:
            if write:
                await chat.append_messages(run.id, [NewMessage("user", "polled")])
            else:
                await chat.list_messages(conversation_id=conv.id, limit=10)
            polls += 1
        assert ended.is_set()
        assert set(threads) == {threading.current_thread().name}  # it ran on this thread


async def test_an_in_memory_database_is_reached_through_the_stores_threads_only() -> None:
    """A shared in-memory database locks whole tables, and a connection refused such a lock
    fails at once: small calls too run on the store's threads, never on the caller's."""
    async with ChatMemory.open("sqlite://") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        threads = _statement_threads(memory)
        await chat.append_messages(run.id, [NewMessage("user", "hi")])
        await chat.list_messages(conversation_id=conv.id, limit=10)
        await chat.get_history(run.id, messages=False)
        assert threads and threading.current_thread().name not in threads
        assert _driver(memory)._write_connection is not None and _driver(memory)._quick_reader is None


async def test_a_small_write_right_after_a_large_one_runs_on_the_callers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread answers a write once it is free again: a caller that goes on at once
    with a small write finds the writer free, rather than queueing behind the end of the write
    it was just answered for (here the writer's work after a commit is made slow, as when its
    thread is not scheduled for a while)."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat, _, run = await _conversation_with_a_run(memory)
        driver = _driver(memory)
        wrote = driver._wrote

        def slowly() -> bool:
            time.sleep(0.02)
            return wrote()

        monkeypatch.setattr(driver, "_wrote", slowly)
        threads = _statement_threads(memory)
        here = threading.current_thread().name
        for i in range(10):
            threads.clear()
            await chat.append_messages(run.id, [NewMessage("user", f"{i}") for _ in range(QUICK_ROWS + 1)])
            assert threads and here not in threads
            threads.clear()
            await chat.append_messages(run.id, [NewMessage("user", f"{i} after")])
            assert set(threads) == {here}, i


async def test_a_few_large_messages_are_not_a_small_call(tmp_path: Path) -> None:
    """A message counts as a row, and as one more for each 4 KB of its content: an append of a
    few messages at the content limit, or one with a large inline image, runs on the store's
    threads; one such message runs on the caller's."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        threads = _statement_threads(memory)
        here = threading.current_thread().name
        longest = "x" * chat._limits.content
        image = {
            "type": "image",
            "data": base64.b64encode(bytes(600_000)).decode(),
            "media_type": "image/png",
        }

        await chat.append_messages(run.id, [NewMessage("user", longest)])
        assert set(threads) == {here}
        for batch in (
            [NewMessage("user", longest) for _ in range(5)],
            [{"role": "user", "content": [image]}],
        ):
            threads.clear()
            await chat.append_messages(run.id, batch)
            assert threads and here not in threads
        assert len(await chat.transcript(conv.id)) == 7


async def _past_deleted(chat: Scope, deleted: int, live: int) -> Conversation:
    """A conversation whose ``live`` newest messages come after ``deleted`` deleted ones."""
    conv = await chat.start_conversation()
    gone = await chat.start_history(conv.id, model="m")
    for _ in range(deleted // 500):
        await chat.append_messages(gone.id, [NewMessage("user", "gone") for _ in range(500)])
    await chat.delete_history(gone.id)
    if live:
        kept = await chat.start_history(conv.id, model="m")
        await chat.append_messages(kept.id, [NewMessage("user", f"m{i}") for i in range(live)])
    return conv


@pytest.mark.parametrize("live", [10, 0])
async def test_a_small_read_that_runs_long_starts_over_on_a_reader_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live: int
) -> None:
    """A page read in order has to step past 2,000 deleted messages before its live ones: with
    no time allowed for a read on the caller's thread, its first statement stops there and the
    read starts over on a reader thread, which answers what the caller's thread would have
    (with no live message, the conversation is then looked up there too). A read that is
    quick stays on the caller's thread, and the connection of quick reads is left with no
    transaction open."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat = memory.scoped(Principal("alice"))
        crowded = await _past_deleted(chat, 2_000, live)
        plain = await _past_deleted(chat, 0, 10)
        expected = await chat.list_messages(conversation_id=crowded.id, limit=10)
        assert [m.content for m in expected.items] == [f"m{i}" for i in range(live)]

        monkeypatch.setattr(_sqlite_driver, "QUICK_READ_SECONDS", 0.0)
        threads = _statement_threads(memory)
        here = threading.current_thread().name
        assert await chat.list_messages(conversation_id=crowded.id, limit=10) == expected
        # Its first statement began here, and the whole read (two statements when the page is
        # empty) ran again on a reader thread.
        assert threads[0] == here
        assert [name.startswith("chatmemory-sqlite-reader") for name in threads[1:]] == [True] * (
            1 if live else 2
        )
        driver = _driver(memory)
        assert driver._quick_reader is not None and not driver._quick_reader.in_transaction

        monkeypatch.undo()  # its time back
        threads.clear()
        assert len((await chat.list_messages(conversation_id=plain.id, limit=10)).items) == 10
        assert set(threads) == {here}


async def test_a_small_read_handed_on_is_withdrawn_by_a_caller_cancelled_before_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that ran long and was handed on to a reader thread, whose caller is cancelled
    while it waits there, is cancelled as any read waiting for a thread is; the store goes on."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat = memory.scoped(Principal("alice"))
        crowded = await _past_deleted(chat, 2_000, 10)
        monkeypatch.setattr(_sqlite_driver, "QUICK_READ_SECONDS", 0.0)
        driver = _driver(memory)
        gate = threading.Event()
        # Every reader thread busy: the read handed on waits in the queue.
        busy = [driver._readers.submit(gate.wait, 30) for _ in range(driver._readers._max_workers)]
        try:
            read = asyncio.ensure_future(chat.list_messages(conversation_id=crowded.id, limit=10))
            await until(lambda: driver._readers._work_queue.qsize() == 1, "the read queued for a thread")
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read
        finally:
            gate.set()
        for waited in busy:
            assert waited.result(10)
        assert len((await chat.list_messages(conversation_id=crowded.id, limit=10)).items) == 10


# Far more than ``_sqlite_driver._CLOCK_STEPS`` steps of SQLite's virtual machine (about a second).
_LONG = SQL(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT count(*) FROM n"
)


class _Interrupted(BaseException):
    """What a signal handler raises: ``KeyboardInterrupt`` from Ctrl-C, ``SystemExit`` from a
    SIGTERM handler calling ``sys.exit``."""


async def test_a_signal_during_a_small_reads_first_statement_is_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small read's first statement runs on the caller's thread with a progress handler. A
    signal arriving meanwhile must reach the caller: were its Python handler run inside the
    progress handler (the only Python code the thread would run while SQLite works), the
    ``sqlite3`` module would clear what it raises and interrupt the statement, which the driver
    would take for a read that ran long, and Ctrl-C (or a SIGTERM handler's ``sys.exit``) would
    be lost."""
    assert threading.current_thread() is threading.main_thread(), "signals are handled there only"

    def long_read() -> Plan[Any]:
        return (yield Stmt(_LONG, {}))

    def handler(*_: object) -> None:
        raise _Interrupted

    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        await memory._db.run(long_read(), rows=1)  # opens the connection of small reads
        monkeypatch.setattr(_sqlite_driver, "QUICK_READ_SECONDS", 60.0)  # never late by the clock
        previous = signal.signal(signal.SIGUSR1, handler)
        main = threading.main_thread().ident
        assert main is not None
        timer = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGUSR1))
        try:
            timer.start()
            with pytest.raises(_Interrupted):
                await memory._db.run(long_read(), rows=1)
        finally:
            timer.cancel()
            signal.signal(signal.SIGUSR1, previous)
