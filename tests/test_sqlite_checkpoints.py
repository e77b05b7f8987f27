"""SQLite checkpoints: a store copies its WAL back into the database file on a thread of its
own soon after writes (so commits do not wait for it), and its writer still bounds the WAL
when writes never pause."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from chatmemory import ChatMemory, NewMessage, Principal, _sqlite_driver
from tests.test_postgres_group_commit import until


def _in_database_file(path: Path) -> int:
    """Messages in the database file itself, the WAL ignored (0 while a checkpoint is still
    writing it: a file read as unchanging may be caught halfway)."""
    try:
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as raw:
            count = int(raw.execute("SELECT count(*) FROM chat_messages").fetchone()[0])
        raw.close()
    except sqlite3.DatabaseError:
        return 0
    return count


async def test_writes_reach_the_database_file_without_a_commit_waiting(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", f"m{i}") for i in range(5)])
        # Far below the writer's own limit, so only the background thread can have copied them.
        await until(lambda: _in_database_file(path) == 5, "the messages in the database file")


async def test_a_writer_that_never_pauses_keeps_the_wal_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes eight times the writer's limit in pages; the WAL stays within twice that, and
    every checkpoint that bounds it runs on the writer thread, never on the caller's (whose
    writes run on its own thread).

    The background checkpoint is held off: the writer's own checkpoint is what bounds the WAL
    of a writer that never pauses (a background checkpoint racing it finishes no WAL, and may
    only delay the writer's by as long as it runs, which on a busy machine is long). Without
    the writer's checkpoint the WAL would hold every page written. (The WAL file keeps the
    largest size it ever reached.)"""
    limit = 400
    monkeypatch.setattr(_sqlite_driver, "WAL_LIMIT_PAGES", limit)
    monkeypatch.setattr(_sqlite_driver, "CHECKPOINT_DELAY", 600.0)  # ended by the close
    path = tmp_path / "b.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        writer = memory._db._sqlite._write_connection  # type: ignore[union-attr]
        assert writer is not None
        statements: list[tuple[str, str]] = []
        writer.set_trace_callback(lambda sql: statements.append((threading.current_thread().name, sql)))
        text = "x" * 3000  # about a page per message
        for _ in range(8 * limit // 10):
            await alice.append_messages(run.id, [NewMessage("user", text) for _ in range(10)])
        wal_pages = (path.parent / (path.name + "-wal")).stat().st_size // 4096
    assert wal_pages < 2 * limit, wal_pages
    here = threading.current_thread().name
    checkpoints = [thread for thread, sql in statements if "wal_checkpoint" in sql]
    assert len(checkpoints) >= 6 and here not in checkpoints, checkpoints
    assert any(thread == here for thread, sql in statements if sql.startswith("INSERT"))


class _StopLandingAfterTheDelay(threading.Event):
    """The checkpoint thread's stop event, whose first wait that runs out lets ``close()`` set
    the stop and send its wake-up before answering "not stopped": a thread switch just after the
    delay."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self.delay_over = threading.Event()
        self._wake = wake

    def wait(self, timeout: float | None = None) -> bool:
        if super().wait(timeout) or self.delay_over.is_set():
            return self.is_set()
        self.delay_over.set()
        super().wait(10)
        for _ in range(1000):  # close() wakes the thread just after setting the stop
            if self._wake.is_set():
                break
            time.sleep(0.01)
        return False


def test_a_close_landing_just_after_the_checkpoint_delay_ends_the_thread(tmp_path: Path) -> None:
    checkpointer = _sqlite_driver.Checkpointer(str(tmp_path / "d.db"))
    stop = checkpointer._stop = _StopLandingAfterTheDelay(checkpointer._wake)
    checkpointer.request()
    assert stop.delay_over.wait(10)
    closing = threading.Thread(target=checkpointer.close, daemon=True)
    closing.start()
    closing.join(10)
    assert not closing.is_alive()
