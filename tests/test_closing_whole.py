"""A store's close is whole however it is called: a close cancelled midway is finished by the
next one, it waits for calls on the store's engine (imports), and a quick call stopped by an
exception right after its ``BEGIN`` leaves no transaction open on its connection."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from chatmemory import ChatMemory, ChatMemoryError, NewMessage, Principal
from chatmemory._sqlite_driver import SQLiteDriver
from chatmemory.scope import Scope


def _driver_left_open(memory: ChatMemory) -> bool:
    db = memory._db
    if db._sqlite is not None:
        checkpoints = db._sqlite._checkpoints
        return bool(db._sqlite._connections) or (checkpoints is not None and checkpoints._thread.is_alive())
    assert db._postgres is not None
    return db._postgres._thread.is_alive()


async def test_a_close_cancelled_midway_is_finished_by_the_next_close(db_url: str) -> None:
    """A close cancelled once it has begun (``asyncio.timeout`` around it, a task group shutting
    down) leaves the store refusing calls, and its closing going on: the next close returns once
    the store's threads have stopped and its connections (PostgreSQL: server connections) are
    closed, not at once with them left for the life of the process."""
    memory = await ChatMemory.open(db_url)
    await memory.scoped(Principal("alice")).start_conversation()
    closing = asyncio.ensure_future(memory.close())
    await asyncio.sleep(0)  # the close has begun: it waits for the change hub's close on a thread
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(memory.close(), 60)
    await asyncio.sleep(0.5)
    assert not _driver_left_open(memory)


async def test_close_waits_for_an_import_that_began_before_it(memory: ChatMemory, alice: Scope) -> None:
    """``ChatMemory.close`` waits for calls still running, those on the store's SQLAlchemy engine
    too (an import, a purge, a migration): an import begun on another thread's event loop before
    the close ends before the close returns, rather than writing on and committing after the
    engine was disposed."""
    conv = await alice.start_conversation()
    history = await alice.start_history(conv.id, model="m")
    await alice.append_messages(history.id, [{"role": "user", "content": "x"}])
    document = await alice.export_conversation(conv.id)
    entered, release = threading.Event(), threading.Event()

    def hold(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO chat_conversations"):
            entered.set()
            release.wait(10)

    event.listen(memory.engine.sync_engine, "before_cursor_execute", hold)
    imported: list[Any] = []

    def importing() -> None:
        async def go() -> None:
            try:
                imported.append(await alice.import_conversation(document, new_ids=True))
            except ChatMemoryError as exc:
                imported.append(exc)

        asyncio.run(go())

    there = threading.Thread(target=importing, daemon=True)
    there.start()
    try:
        assert await asyncio.to_thread(entered.wait, 10)
        closing = asyncio.ensure_future(memory.close())
        done, _ = await asyncio.wait({closing}, timeout=1)
    finally:
        release.set()
    await asyncio.wait_for(closing, 30)
    await asyncio.to_thread(there.join, 30)
    assert imported
    assert not done, f"close returned while the import was still writing (it then gave {imported[0]!r})"


class _Interrupted(BaseException):
    """What a signal's handler raises (``KeyboardInterrupt``, ``SystemExit``)."""


@pytest.mark.parametrize("write", [True, False], ids=["write", "read"])
async def test_a_quick_call_stopped_right_after_its_begin_leaves_no_transaction_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: bool
) -> None:
    """A signal's exception can land between a quick call's ``BEGIN`` on the caller's thread and
    the plan's own rollback (its first instructions). The transaction must not stay open: a
    write's would hold the database's write lock, a read's an old snapshot."""
    path = tmp_path / "t.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", "one")])
        await alice.list_messages(conversation_id=conv.id)  # opens the quick reader's connection
        stopped = False
        finish, read_here = SQLiteDriver._finish, SQLiteDriver._read_here

        def stop_once(original: Any) -> Any:
            def stop(self: SQLiteDriver, connection: sqlite3.Connection, plan: Any) -> Any:
                nonlocal stopped
                if not stopped:
                    stopped = True
                    plan.close()
                    raise _Interrupted
                return original(self, connection, plan)

            return stop

        if write:
            monkeypatch.setattr(SQLiteDriver, "_finish", stop_once(finish))
            with pytest.raises(_Interrupted):
                await alice.append_messages(run.id, [NewMessage("user", "lost")])
        else:
            monkeypatch.setattr(SQLiteDriver, "_read_here", stop_once(read_here))
            with pytest.raises(_Interrupted):
                await alice.list_messages(conversation_id=conv.id)
        assert stopped
        # Another connection writes at once (no lock held), and the store reads it (no old snapshot).
        other = sqlite3.connect(path, timeout=0)
        try:
            other.execute("UPDATE chat_conversations SET title = 'renamed'")
            other.commit()
        finally:
            other.close()
        assert (await alice.get_conversation(conv.id)).title == "renamed"
        page = await alice.list_messages(conversation_id=conv.id)
        assert [m.content for m in page.items] == ["one"]
        added = await alice.append_messages(run.id, [NewMessage("user", "two")])
        assert added[0].seq == 2
