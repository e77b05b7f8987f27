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
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable

# The WAL is finished (copied whole, so it starts over) once past this many pages, and the
# writer thread checkpoints itself at twice that. SQLite's own checkpoint, in the commit that
# reaches it, is at 1,000.
WAL_LIMIT_PAGES = 4_000
# The WAL file is cut back to this many frames when the WAL starts over, if it is longer (see
# ``WalFile``): a WAL that stays within the limits above never makes it longer.
FILE_LIMIT_PAGES = 4 * WAL_LIMIT_PAGES
# The background checkpoint runs this long after the write that woke it, so writes share it.
CHECKPOINT_DELAY = 0.05
# Finishing a WAL past the limit: at most this many copies while writers go on, fewer once one
# had fewer pages than this to copy.
_CATCH_UP_COPIES = 4
_FEW_PAGES = 256


class WalFile:
    """How many frames (pages) a database's WAL holds, read from the WAL file itself.

    The WAL file keeps its size when the WAL starts over (SQLite writes from its start again)
    and is cut back, to ``FILE_LIMIT_PAGES`` frames, only past that (after a burst), so the
    commits after a start overwrite what the file already holds instead of growing it.
    Measured on ext4, commits that grew the file waited now and then while the checkpoint
    synced it: W1's slowest turns took 4-5 ms, about 2 ms once the file was no longer cut back
    (``benchmarks/README.md``, gap 2). Its size therefore says nothing about how full the WAL
    is. Its frames do: each carries the salts of the WAL header it was written under, which
    change whenever the WAL starts over, so the frames with the header's salts are the WAL's
    (and any a transaction wrote but did not commit, which count as a commit's would).

    The wal-index (``-shm``) holds that count too, but this process's SQLite connections hold
    POSIX locks on that file, which a process loses on closing any descriptor of it: reading
    it through a descriptor of its own would drop them when that closes. SQLite locks no byte
    of the WAL file.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        page = int(connection.execute("PRAGMA page_size").fetchone()[0])
        # A frame is a 24-byte header (salts at 8..16) and a page, after the file's 32-byte
        # header (salts at 16..24).
        self._frame = page + 24
        self.file_limit = 32 + FILE_LIMIT_PAGES * self._frame
        self.path = str(connection.execute("PRAGMA database_list").fetchone()[2]) + "-wal"
        self._fd: int | None = None
        self._salts = b""  # the WAL header's when last counted
        self._last = 0  # frames counted then
        self._grown = 1  # by how many frames that count grew: the next one is guessed alike
        self._counted_at = -math.inf  # ``time.monotonic()`` then

    def pages(self, *, max_age: float = 0.0) -> int:
        """The WAL's frames; 0 before it has any. Reads the WAL header's salts and, mostly, two
        frame headers: where the last count, grown by as much as it grew then, ends. While the
        salts stay, the WAL's frames only grow, so the search starts from the last count.

        A count younger than ``max_age`` seconds is answered again without reading."""
        now = time.monotonic()
        if now < self._counted_at + max_age:
            return self._last
        self._counted_at = now
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            fd, frame_size = self._fd, self._frame
            salts = _read_at(fd, 8, 16)
            if len(salts) < 8:
                self._salts, self._last = b"", 0
                return 0  # an empty WAL

            def ours(frame: int) -> bool:
                return frame == 0 or _read_at(fd, 8, 40 + (frame - 1) * frame_size) == salts

            # Frames ``low`` and before are the WAL's, ``high`` is not.
            before = self._last if salts == self._salts else 0  # else it started over
            low = before
            high = low + self._grown
            if ours(high):
                low, step = high, 1
                while ours(low + step):
                    low += step
                    step *= 2
                high = low + step
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if ours(middle) else (low, middle)
        except OSError:
            self._last = 0
            return 0  # no WAL yet
        self._salts, self._last, self._grown = salts, low, max(low - before, 1)
        return low

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _seek_and_read(fd: int, size: int, offset: int) -> bytes:
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


# ``os.pread`` is not on Windows, where the seek and the read are two calls: only the thread
# holding the store's writers counts the WAL's frames, so no other moves the file's offset.
_read_at: Callable[[int, int, int], bytes] = getattr(os, "pread", _seek_and_read)


class Checkpointer:
    """Copies the WAL back into the database file on its own thread, shortly after writes,
    and finishes it, holding ``writers`` (a lock every writer of the store holds while it
    writes), once it is past ``WAL_LIMIT_PAGES``."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], writers: threading.Lock) -> None:
        self._connect = connect
        self._writers = writers
        # Held by a checkpoint of this store: one at a time (taken after ``writers``).
        self.running = threading.Lock()
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
            with self.running:
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
        with self.running:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        """Stop the thread (blocking)."""
        self._stop.set()
        self._hurry.set()
        self._wake.set()
        self._thread.join()
