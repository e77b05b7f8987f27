"""A store used in a process forked after it was opened (a preloading server's workers, a
``multiprocessing`` pool with the ``fork`` start method) refuses its calls at once, clearly:
the threads that serve its calls stayed in the parent. The parent goes on using it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatmemory import ChatMemory, Principal, StorageError
from chatmemory._plan import Stmt


async def _in_the_child(memory: ChatMemory) -> dict[str, str]:
    chat = memory.scoped(Principal("alice"))
    outcomes: dict[str, str] = {}
    for name, call in [
        ("read", lambda: chat.list_conversations()),
        ("write", lambda: chat.start_conversation(title="child")),
    ]:
        try:
            await asyncio.wait_for(call(), 10)
            outcomes[name] = "worked"
        except StorageError as exc:
            outcomes[name] = str(exc)
        except TimeoutError:
            outcomes[name] = "hung"
    await asyncio.wait_for(memory.close(), 10)
    outcomes["close"] = "returned"
    return outcomes


def _forked(answer: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork; the child calls ``answer`` and hands its result back as JSON, never returning into
    pytest. The child's answer, once it has ended (killed if it hangs)."""
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(reading)
            os.write(writing, json.dumps(answer()).encode())
        finally:
            os._exit(0)
    os.close(writing)
    try:
        ready, _, _ = select.select([reading], [], [], 60)
        assert ready, "the child never answered"
        answered: dict[str, Any] = json.loads(os.read(reading, 65536) or b"{}")
        deadline = time.monotonic() + 30
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            assert time.monotonic() < deadline, "the child never ended"
            time.sleep(0.01)
        return answered
    finally:
        os.close(reading)
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)  # hung: it would outlive the test
                os.waitpid(pid, 0)


def test_a_store_used_in_a_forked_process_refuses_its_calls_and_the_parent_goes_on(db_url: str) -> None:
    """The child's read must not wait for good, nor its write ignore the caller's timeout."""

    async def opened() -> ChatMemory:
        return await ChatMemory.open(db_url)

    memory = asyncio.run(opened())
    try:
        chat = memory.scoped(Principal("alice"))
        asyncio.run(chat.start_conversation(title="parent"))
        outcomes = _forked(lambda: asyncio.run(_in_the_child(memory)))
        assert outcomes["close"] == "returned"
        for name in ("read", "write"):
            assert "forked" in outcomes[name], outcomes
        titles = [c.title for c in asyncio.run(chat.list_conversations()).items]
        assert titles == ["parent"]  # the child wrote nothing, and the parent's store works
        asyncio.run(chat.start_conversation(title="parent again"))
    finally:
        asyncio.run(memory.close())


async def _opened(url: str) -> ChatMemory:
    return await ChatMemory.open(url)


def _held_inside(memory: ChatMemory, thread_prefix: str, nth: int) -> threading.Event:
    """Make the ``nth`` statement a thread named ``thread_prefix...`` sends pause for a second,
    inside its transaction: the event is set once it pauses."""
    inside = threading.Event()
    sent: dict[str, int] = {}

    def trace(stmt: Stmt) -> None:
        name = threading.current_thread().name
        if name.startswith(thread_prefix) and not inside.is_set():
            sent[name] = sent.get(name, 0) + 1
            if sent[name] == nth:
                inside.set()
                time.sleep(1.0)

    memory._db.set_trace(trace)
    return inside


async def _write_in_a_store_of_its_own(url: str) -> dict[str, Any]:
    try:
        async with ChatMemory.open(url) as memory:
            await asyncio.wait_for(memory.scoped(Principal("bob")).start_conversation(title="child"), 10)
        return {"write": "worked"}
    except TimeoutError:
        return {"write": "waited for a lock nothing would release"}


def test_a_process_forked_while_its_parent_writes_can_write_with_a_store_of_its_own(tmp_path: Path) -> None:
    """SQLite keeps one record of the locks a process holds on a file, which a child inherits
    as it was at the fork: a fork waits for the write in progress, so the child's own store
    does not find the parent's write lock held in it for good."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    memory = asyncio.run(_opened(url))
    try:
        chat = memory.scoped(Principal("alice"))
        inside = _held_inside(memory, "writer", 1)
        writer = threading.Thread(
            target=lambda: asyncio.run(chat.start_conversation(title="parent")), name="writer"
        )
        writer.start()
        assert inside.wait(10)
        outcome = _forked(lambda: asyncio.run(_write_in_a_store_of_its_own(url)))
        writer.join(10)
        memory._db.set_trace(None)
        assert outcome == {"write": "worked"}
        titles = sorted(c.title or "" for c in asyncio.run(chat.list_conversations()).items)
        assert titles == ["parent"]  # bob's is bob's
    finally:
        asyncio.run(memory.close())


def _checkpoint_in_a_store_of_its_own(url: str, path: Path) -> dict[str, Any]:
    async def write() -> None:
        async with ChatMemory.open(url) as memory:
            await memory.scoped(Principal("bob")).start_conversation(title="child")

    asyncio.run(write())
    connection = sqlite3.connect(path, timeout=0)  # busy at once: the loop does the waiting
    try:
        for _ in range(50):  # the parent's read, which the fork did not wait for, ends meanwhile
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return {"checkpoint": "finished"}
            time.sleep(0.1)
        return {"checkpoint": "a reader held it off for good"}
    finally:
        connection.close()


def test_a_process_forked_while_its_parent_reads_can_finish_a_checkpoint(tmp_path: Path) -> None:
    """A fork during a read (on a reader thread, past its first statement, its snapshot taken)
    waits for it: the child's checkpoints then finish, where the parent's read lock, inherited
    and never released, held every one of them off and the child's WAL grew without bound."""
    path = tmp_path / "chat.db"
    url = f"sqlite:///{path}"
    memory = asyncio.run(_opened(url))
    try:
        chat = memory.scoped(Principal("alice"))
        conversation = asyncio.run(chat.start_conversation(title="parent"))
        inside = _held_inside(memory, "chatmemory-sqlite-reader", 2)
        reader = threading.Thread(target=lambda: asyncio.run(chat.transcript(conversation.id)))
        reader.start()
        assert inside.wait(10)
        outcome = _forked(lambda: _checkpoint_in_a_store_of_its_own(url, path))
        reader.join(10)
        memory._db.set_trace(None)
        assert outcome == {"checkpoint": "finished"}
    finally:
        asyncio.run(memory.close())
