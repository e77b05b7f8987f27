"""SQLite checkpoints: copying the WAL back into the database file, off the writers' path.

Checkpoints (with their two syncs) run on a thread of their own, shortly after writes, so a
commit never waits for one. SQLite starts the WAL over only once a checkpoint has copied all
of it, which a writer that never pauses does not let happen: so once the WAL is past
``WAL_LIMIT_PAGES`` that thread, right after its checkpoint (which copied most of the WAL while
writes went on), holds the store's writers off for a last one, which copies only what they
added meanwhile. Should the WAL still reach twice the limit, the store's writer thread
checkpoints after its next write, as SQLite's own checkpoint in a commit would.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable

# The WAL is finished (copied whole, so it starts over) once past this many pages, and the
# writer thread checkpoints itself at twice that. SQLite's own checkpoint, in the commit that
# reaches it, is at 1,000.
WAL_LIMIT_PAGES = 4_000
# The background checkpoint runs this long after the write that woke it, so writes share it.
CHECKPOINT_DELAY = 0.05
# Finishing a WAL past the limit: at most this many copies while writers go on, fewer once one
# had fewer pages than this to copy.
_CATCH_UP_COPIES = 4
_FEW_PAGES = 256


class WalFile:
    """The size of a database's WAL file, which tells how many pages the WAL holds once the
    writer connection has ``journal_size_limit`` at ``limit`` bytes (see ``SQLiteDriver._open_writer``).

    A WAL file keeps its size when SQLite starts the WAL over (it writes from the start
    again), unless ``journal_size_limit`` is set: then the first commit after the start cuts a
    longer file to that limit. The file is longer than the limit only while the WAL holds more
    pages than that, and it grows with every page written past it.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.limit = WAL_LIMIT_PAGES * int(connection.execute("PRAGMA page_size").fetchone()[0])
        self.path = str(connection.execute("PRAGMA database_list").fetchone()[2]) + "-wal"

    def size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0  # no WAL yet


class Checkpointer:
    """Copies the WAL back into the database file on its own thread, shortly after writes,
    and finishes it, holding ``writers`` (a lock every writer of the store holds while it
    writes), once it is past ``WAL_LIMIT_PAGES``."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], writers: threading.Lock) -> None:
        self._connect = connect
        self._writers = writers
        # Held by a checkpoint of this store: one at a time (taken after ``writers``).
        self._running = threading.Lock()
        self._wake = threading.Event()
        # Ends the delay after a wake-up: set for a WAL past the limit, and by close().
        self._hurry = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chatmemory-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def request(self, *, hurry: bool = False) -> None:
        """Checkpoint soon (called after a commit); at once if ``hurry``."""
        if hurry:
            self._hurry.set()
        self._wake.set()

    def _loop(self) -> None:
        try:
            connection = self._connect()
        except sqlite3.Error:
            return  # the writer thread's own checkpoint still bounds the WAL
        with contextlib.closing(connection):
            while True:
                self._wake.wait()
                self._hurry.wait(CHECKPOINT_DELAY)
                if self._stop.is_set():
                    return
                self._wake.clear()
                self._hurry.clear()
                if self._stop.is_set():  # close() came just now: the wake-ups it sent are cleared
                    return
                # Fails only while another connection checkpoints; the next write wakes this.
                with contextlib.suppress(sqlite3.Error):
                    self._checkpoint(connection)

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        """Copy the WAL, and once it is past the limit finish it: more copies while writers go
        on, each of what they added during the one before, until that is a few pages; then one
        more holding them off. PASSIVE copies what no reader still needs, and never waits for
        or blocks anyone."""
        copied = 0
        for _ in range(_CATCH_UP_COPIES):
            with self._running:
                busy, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy or frames <= WAL_LIMIT_PAGES:
                return
            if frames - copied < _FEW_PAGES:
                break
            copied = frames
        with self._writers:
            self.checkpoint(connection)

    def checkpoint(self, connection: sqlite3.Connection) -> None:
        """Checkpoint on ``connection`` once no other checkpoint of this store runs (SQLite
        would refuse it meanwhile). Called holding the writers off, it finishes the WAL (unless
        another process's reader still needs part of it), and the next write starts it over.

        Raises:
            sqlite3.Error: another process checkpoints, or the database failed.
        """
        with self._running:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        """Stop the thread (blocking)."""
        self._stop.set()
        self._hurry.set()
        self._wake.set()
        self._thread.join()
