"""SQLite checkpoints: a store copies its WAL back into the database file on a thread of its
own soon after writes (so commits do not wait for it), and its writer still bounds the WAL
when writes never pause."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from chatmemory import ChatMemory, NewMessage, Principal, Scope, _sqlite_driver, _sqlite_wal
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


def _wal_file(path: Path) -> Path:
    return path.parent / (path.name + "-wal")


async def _running(memory: ChatMemory) -> tuple[Scope, UUID]:
    """Alice's scope, and the id of a running history in a new conversation of hers."""
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    return alice, (await alice.start_history(conv.id, model="m")).id


async def test_writes_reach_the_database_file_without_a_commit_waiting(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        alice, run = await _running(memory)
        await alice.append_messages(run, [NewMessage("user", f"m{i}") for i in range(5)])
        # Far below the writer's own limit, so only the background thread can have copied them.
        await until(lambda: _in_database_file(path) == 5, "the messages in the database file")


@pytest.mark.parametrize(
    "vfs", ["", "?vfs=unix-excl&uri=true"], ids=["shared-wal-index", "wal-index-in-heap"]
)
@pytest.mark.parametrize("background", [True, False], ids=["background", "writer-thread"])
async def test_a_writer_that_never_pauses_keeps_the_wal_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background: bool, vfs: str
) -> None:
    """Writes eight times the limit in pages, on the caller's thread (small appends): the WAL
    stays bounded, and no checkpoint ever runs on the caller's thread.

    The background checkpoint finishes the WAL once it is past the limit (holding the writers
    off for its last pages). Should it not keep up (on a busy machine; here once it copies
    nothing), the writer thread checkpoints after a write once the WAL is past twice the limit
    (waiting for a background checkpoint under way), which keeps it within three times. Without
    either the WAL would hold every page written. (The WAL file keeps the largest size it
    reached.) Also where SQLite keeps the wal-index in its own memory, not in a ``-shm`` file
    (``unix-excl``: one process only)."""
    limit = 400
    monkeypatch.setattr(_sqlite_wal, "WAL_LIMIT_PAGES", limit)
    if not background:
        monkeypatch.setattr(_sqlite_wal.Checkpointer, "_checkpoint", lambda self, connection: None)
    path = tmp_path / "b.db"
    async with ChatMemory.open(f"sqlite:///{'file:' if vfs else ''}{path}{vfs}") as memory:
        alice, run = await _running(memory)
        writer = memory._db._sqlite._write_connection  # type: ignore[union-attr]
        assert writer is not None
        statements: list[tuple[str, str]] = []
        writer.set_trace_callback(lambda sql: statements.append((threading.current_thread().name, sql)))
        text = "x" * 3000  # about a page per message
        for _ in range(8 * limit // 10):
            await alice.append_messages(run, [NewMessage("user", text) for _ in range(10)])
        wal_pages = _wal_file(path).stat().st_size // 4096
    assert wal_pages < 3 * limit, wal_pages
    here = threading.current_thread().name
    checkpoints = [thread for thread, sql in statements if "wal_checkpoint" in sql]
    assert here not in checkpoints
    assert background or len(checkpoints) >= 3, checkpoints
    assert any(thread == here for thread, sql in statements if sql.startswith("INSERT"))


@contextlib.contextmanager
def _no_write_nor_checkpoint(memory: ChatMemory) -> Iterator[None]:
    """Hold the store's writers and its checkpoints off (in the order its checkpoints take them)."""
    driver = memory._db._sqlite
    assert driver is not None and driver._checkpoints is not None
    with driver._writing, driver._checkpoints.running:
        yield


async def test_the_wal_file_keeps_its_size_when_the_wal_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL starts over again and again under steady writes, and its file is never cut back
    (the commits after a start overwrite it rather than grow it); how full the WAL is comes from
    its frames, which agrees with SQLite's own count."""
    limit = 200
    monkeypatch.setattr(_sqlite_wal, "WAL_LIMIT_PAGES", limit)
    path = tmp_path / "k.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        alice, run = await _running(memory)
        wal = memory._db._sqlite._wal  # type: ignore[union-attr]
        assert wal is not None
        sizes, fills = [], []
        for _ in range(150):
            await alice.append_messages(run, [NewMessage("user", "x" * 3000) for _ in range(4)])
            sizes.append(_wal_file(path).stat().st_size)
            fills.append(wal.pages())
        starts = sum(1 for before, after in itertools.pairwise(fills) if after < before)
        assert starts >= 2, fills
        assert sizes == sorted(sizes), "the WAL file was cut back"
        with _no_write_nor_checkpoint(memory), contextlib.closing(sqlite3.connect(path)) as other:
            frames = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
            assert wal.pages() == frames > 0


async def test_a_wal_file_grown_past_its_own_limit_is_cut_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One large write grows the WAL far past the limits; once it starts over, its file is cut
    back to ``FILE_LIMIT_PAGES`` frames."""
    monkeypatch.setattr(_sqlite_wal, "WAL_LIMIT_PAGES", 100)
    monkeypatch.setattr(_sqlite_wal, "FILE_LIMIT_PAGES", 300)
    path = tmp_path / "g.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        alice, run = await _running(memory)
        await alice.append_messages(run, [NewMessage("user", "y" * 90_000) for _ in range(100)])
        grown = _wal_file(path).stat().st_size
        assert grown > 1000 * 4096
        with _no_write_nor_checkpoint(memory), contextlib.closing(sqlite3.connect(path)) as other:
            _, frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames == copied > 1000  # all of it copied: the next write starts the WAL over
        await alice.append_messages(run, [NewMessage("user", "after")])
        assert _wal_file(path).stat().st_size <= 32 + 300 * (4096 + 24) < grown


# Takes, in a process of its own, the write lock on the byte of a ``-shm`` file that SQLite's
# connections hold a read lock on while they use it (``UNIX_SHM_DMS``): the first connection of
# a process that gets it takes the wal-index for unused and starts it afresh.
_TAKE_THE_WAL_INDEX = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
except OSError:
    print("in use")
else:
    print("unused")
"""


def _wal_index_in_use(path: Path) -> bool:
    shm = str(path.parent / (path.name + "-shm"))
    probe = subprocess.run([sys.executable, "-c", _TAKE_THE_WAL_INDEX, shm], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.strip() == "in use"


async def test_closing_a_store_leaves_another_stores_locks_on_the_same_file(tmp_path: Path) -> None:
    """Two stores of one process on one file, both written to: closing one leaves the other's
    locks in place, so another process never takes the wal-index the open store uses for
    unused (a process's locks on a file go when it closes any descriptor of that file)."""
    path = tmp_path / "two.db"
    async with ChatMemory.open(f"sqlite:///{path}") as staying:
        async with ChatMemory.open(f"sqlite:///{path}") as closing:
            for memory in (staying, closing):
                alice = memory.scoped(Principal("alice"))
                conv = await alice.start_conversation()
                await alice.start_history(conv.id, model="m")
            assert _wal_index_in_use(path)
        assert _wal_index_in_use(path)
        alice = staying.scoped(Principal("alice"))
        assert len((await alice.list_conversations()).items) == 2


# Another process's writes: many pages, a checkpoint that copies them all, then a few more,
# which start the WAL over.
_ANOTHER_PROCESS_WRITES = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA wal_autocheckpoint = 0")
for rows in (300, 3):
    for _ in range(rows):
        connection.execute("INSERT INTO other VALUES (?)", ("z" * 3000,))
    print(*connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
connection.close()
"""


async def test_the_wal_fill_counts_another_processs_frames(tmp_path: Path) -> None:
    """A WAL another process wrote to, and started over, is counted as SQLite counts it."""
    path = tmp_path / "o.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        with contextlib.closing(sqlite3.connect(path)) as setup:
            setup.execute("CREATE TABLE other (x TEXT)")
            setup.commit()
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        await alice.start_history(conv.id, model="m")
        wal = memory._db._sqlite._wal  # type: ignore[union-attr]
        assert wal is not None and wal.pages() > 0
        with _no_write_nor_checkpoint(memory):
            other = subprocess.run(
                [sys.executable, "-c", _ANOTHER_PROCESS_WRITES, str(path)], capture_output=True, text=True
            )
            assert other.returncode == 0, other.stderr
            (_, frames, copied), (_, started_over, _) = [
                map(int, line.split()) for line in other.stdout.split("\n")[:2]
            ]
            assert frames == copied > 300  # all copied: the next write started the WAL over
            assert wal.pages() == started_over < 100
        await alice.start_history(conv.id, model="n")
        with _no_write_nor_checkpoint(memory), contextlib.closing(sqlite3.connect(path)) as other_connection:
            assert wal.pages() == other_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]


def _open_files_named(path: Path) -> list[str]:
    """This process's descriptors of ``path`` and of its ``-wal`` and ``-shm`` files (Linux)."""
    named = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(path)):
                named.append(target)
    return named


@pytest.mark.parametrize("writes", [True, False], ids=["written", "only-read"])
async def test_a_closed_store_leaves_no_descriptor_of_its_files(tmp_path: Path, writes: bool) -> None:
    path = tmp_path / "fd.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        alice = memory.scoped(Principal("alice"))
        if writes:
            alice, run = await _running(memory)
            await alice.append_messages(run, [NewMessage("user", "x" * 3000) for _ in range(20)])
        await alice.list_conversations()
        assert _open_files_named(path)
    assert _open_files_named(path) == []


def test_the_wal_fill_agrees_with_sqlite_through_commits_of_any_size_and_starts_over(tmp_path: Path) -> None:
    """Commits of one row to a hundred, small and spanning pages, and now and then a checkpoint
    that copies the whole WAL (so the next commit starts it over): after each commit the count
    is SQLite's own. It guesses where the WAL ends from how the last count grew, and must find
    the end when the guess is short, long, or the WAL started over."""
    path = str(tmp_path / "f.db")
    writer = _sqlite_driver.connect(path)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (x TEXT)")
    wal = _sqlite_wal.WalFile(writer)
    checker = sqlite3.connect(path)
    rng = random.Random(7)
    starts = 0
    try:
        for _ in range(400):
            writer.execute("BEGIN IMMEDIATE")
            for _ in range(rng.choice([1, 1, 2, 3, 8, 30, 100])):
                writer.execute("INSERT INTO t VALUES (?)", ("x" * rng.choice([10, 3000, 9000]),))
            writer.execute("COMMIT")
            counted = wal.pages()
            # SQLite's count; a PASSIVE checkpoint with no other connection copies all of it.
            busy, frames, copied = checker.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            assert (busy, counted) == (0, frames)
            starts += copied == frames
    finally:
        wal.close()
        checker.close()
        writer.close()
    assert starts > 300


class _CloseLandingAfterTheDelay(threading.Event):
    """The checkpoint thread's delay (its hurry event), whose first wait that runs out lets
    ``close()`` set the stop and send its wake-ups before answering "not hurried": a thread
    switch just after the delay."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self.delay_over = threading.Event()
        self._wake = wake

    def wait(self, timeout: float | None = None) -> bool:
        if super().wait(timeout) or self.delay_over.is_set():
            return self.is_set()
        self.delay_over.set()
        super().wait(10)
        for _ in range(1000):  # close() wakes the thread just after hurrying it
            if self._wake.is_set():
                break
            time.sleep(0.01)
        return False


def test_a_close_landing_just_after_the_checkpoint_delay_ends_the_thread(tmp_path: Path) -> None:
    path = str(tmp_path / "d.db")
    checkpointer = _sqlite_wal.Checkpointer(lambda: _sqlite_driver.connect(path), threading.Lock())
    delay = checkpointer._hurry = _CloseLandingAfterTheDelay(checkpointer._wake)
    checkpointer.request()
    assert delay.delay_over.wait(10)
    closing = threading.Thread(target=checkpointer.close, daemon=True)
    closing.start()
    closing.join(10)
    assert not closing.is_alive()


def test_a_wal_past_the_limit_is_finished_while_a_writer_never_pauses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer commits without pause (holding the writers' lock for each commit, as a
    store's writers do): one background checkpoint of a WAL past the limit still copies it
    whole, so the writer's next commit starts the WAL over."""
    limit = 200
    monkeypatch.setattr(_sqlite_wal, "WAL_LIMIT_PAGES", limit)
    path = str(tmp_path / "w.db")
    setup = _sqlite_driver.connect(path)
    setup.execute("CREATE TABLE t (x TEXT)")
    writers = threading.Lock()
    stop = threading.Event()
    # Set by the checkpoint that finishes the WAL while it holds the writers off; the writer
    # stops after its first commit since, however soon this test's thread looks at the WAL.
    finished, followed = threading.Event(), threading.Event()

    def write() -> None:
        connection = _sqlite_driver.connect(path)
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        while not stop.is_set():
            with writers:
                first_since = finished.is_set()
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("INSERT INTO t VALUES (?)", ("x" * 4000,))
                connection.execute("COMMIT")
            if first_since:
                followed.set()
                break
            time.sleep(0)  # lets a thread waiting for the lock take it
        connection.close()

    def wal_pages() -> int:
        return (tmp_path / "w.db-wal").stat().st_size // 4096 if (tmp_path / "w.db-wal").exists() else 0

    writer = threading.Thread(target=write)
    writer.start()
    checkpointer = _sqlite_wal.Checkpointer(lambda: _sqlite_driver.connect(path), writers)
    checkpointer._stop.set()  # this test runs its one checkpoint itself
    finish = checkpointer.checkpoint

    def finish_then_tell(connection: sqlite3.Connection) -> None:
        finish(connection)
        finished.set()

    monkeypatch.setattr(checkpointer, "checkpoint", finish_then_tell)
    other = _sqlite_driver.connect(path)
    try:
        for _ in range(3000):
            if wal_pages() > 2 * limit:
                break
            time.sleep(0.01)
        checkpointer._checkpoint(other)
        assert followed.wait(30), "no commit after a checkpoint that finished the WAL"
        # The writer's commit since started the WAL over: it holds only that one's pages, not
        # the more than twice the limit it held before.
        with writers:
            busy, frames, _ = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames < limit, frames
    finally:
        stop.set()
        writer.join(30)
        checkpointer.close()
        other.close()
        setup.close()
