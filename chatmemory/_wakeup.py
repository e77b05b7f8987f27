"""Waking watchers when changes commit, in this process or another.

Watchers read their events from the database; a wakeup only tells them to read now. A commit
made through this store wakes them at once. Commits by other processes are noticed by one
source per store: on SQLite a thread polling ``PRAGMA data_version`` every ``interval`` while
anyone watches; on PostgreSQL one ``LISTEN`` connection. Watchers also re-read on their own
now and then, so a wakeup that never came only delays an event. Each watcher waits on its own
event loop and is woken with ``call_soon_threadsafe``, so watchers may run on any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Collection
from uuid import UUID

from chatmemory import _sql
from chatmemory._changes import NOTE_MAX, read_note

# How often a watcher re-reads when wakeups from other processes are live: a safety net, which
# an idle watcher pays for and nothing else (300 idle sidebars of a server took 7-18% of a core
# re-reading every second, 3-6% every 5 seconds).
RESCAN_SECONDS = 5.0
# The most conversations a watcher of every conversation remembers it cannot see.
HIDDEN_MAX = 10_000


class Waiter:
    """One watcher's wakeup, on the event loop it runs in (``conversation_id``: the one it
    watches; ``None``: every conversation)."""

    def __init__(self, conversation_id: UUID | None) -> None:
        self.conversation_id = conversation_id
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        # Replaced, never changed in place: other threads read it as they notify.
        self._hidden: frozenset[UUID] = frozenset()

    def concerns(self, conversation_ids: Collection[UUID]) -> bool:
        """Whether a change of these conversations may be one this watcher shows."""
        if self.conversation_id is not None:
            return self.conversation_id in conversation_ids
        return not self._hidden.issuperset(conversation_ids)

    def hide(self, conversation_ids: Collection[UUID]) -> None:
        """Conversations this watcher of every conversation cannot see (owner and tenant never
        change): their changes wake it no more, and its periodic re-read still covers them."""
        if conversation_ids:
            hidden = self._hidden.union(conversation_ids)
            self._hidden = hidden if len(hidden) <= HIDDEN_MAX else frozenset(conversation_ids)

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop is closed: nothing left to wake
            self._loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, seconds: float) -> None:
        """Until woken, or ``seconds`` have passed."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for may swallow a cancellation
        # that arrives as the event is set, and the watcher would never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()


class ChangeHub:
    """The watchers of one store and what wakes them.

    ``sqlite_path`` starts a ``data_version`` poller while anyone watches; ``listen`` starts
    the PostgreSQL listener (idempotent), which calls back with each notification's payload,
    and ``listening`` says whether it is connected.
    Without either (a caller's engine), watchers re-read every ``interval``.
    """

    def __init__(
        self,
        interval: float,
        *,
        sqlite_path: str | None = None,
        local_only: bool = False,
        listen: Callable[[Callable[[str], None]], None] | None = None,
        listening: Callable[[], bool] | None = None,
    ) -> None:
        self.interval = interval
        self.closed = False
        self.token = uuid.uuid4().hex
        """What this store's commits notify, so its listener skips what it already woke for."""
        self.store: str | None = None
        """This database's identity in change cursors (``_changes.store``), read on first use."""
        self._sqlite_path = sqlite_path
        self._local_only = local_only
        self._listen = listen
        self._listening = listening
        self._waiters: set[Waiter] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def subscribe(self, conversation_id: UUID | None) -> Waiter | None:
        """A wakeup for a new watcher on the running loop (``None`` once the store is closed)."""
        waiter = Waiter(conversation_id)
        with self._lock:
            if self.closed:
                return None
            self._waiters.add(waiter)
            if self._sqlite_path is not None and self._poller is None:
                self._poller = threading.Thread(
                    target=self._poll, args=(self._sqlite_path,), name="chatmemory-watch", daemon=True
                )
                self._poller.start()
        if self._listen is not None:
            self._listen(self._notified)
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        with self._lock:
            self._waiters.discard(waiter)

    def notify(self, conversation_ids: Collection[UUID] | None = None) -> None:
        """Wake the watchers of these conversations and of all, or every watcher (from any thread)."""
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            if conversation_ids is None or waiter.concerns(conversation_ids):
                waiter.wake()

    def _notified(self, payload: str) -> None:
        token, conversation_ids = read_note(payload)
        # This store's own commits woke its watchers already.
        if token != self.token:
            self.notify(conversation_ids)

    def timeout(self) -> float:
        """How long a watcher waits for a wakeup before it re-reads anyway."""
        live = (
            self._local_only
            or self._sqlite_path is not None
            or (self._listening is not None and self._listening())
        )
        return max(self.interval, RESCAN_SECONDS) if live else self.interval

    def close(self) -> None:
        """Wake every watcher to find the store closed, and stop the poller."""
        with self._lock:
            self.closed = True
            poller = self._poller
        self._stop.set()
        self.notify()
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=5)

    def _poll(self, path: str) -> None:
        # A database error (the file briefly locked or unreadable) ends one connection, not the
        # polling: the next one starts an interval later and wakes everyone for what it missed.
        while not self._stop.is_set():
            with contextlib.suppress(sqlite3.Error):
                if self._poll_with(path):
                    return
            if self._stop.wait(self.interval) or self._unwatched():
                return

    def _unwatched(self) -> bool:
        """Whether no one watches; then the poller is done (a new watcher starts another)."""
        with self._lock:
            if self._waiters:
                return False
            self._poller = None
            return True

    def _poll_with(self, path: str) -> bool:
        """Poll on one connection until the store closes or no one watches (then ``True``), or
        until it fails."""
        connection = sqlite3.connect(path, check_same_thread=False, uri=path.startswith("file:"))
        try:
            # data_version changes when another connection commits to the file; the change rows
            # written since say whose watchers to wake.
            version = connection.execute("PRAGMA data_version").fetchone()[0]
            seen = connection.execute(_sql.CHANGE_HEAD.sqlite).fetchone()[0]
            self.notify()  # for what committed before ``seen`` was read and after watchers last read
            while not self._stop.wait(self.interval):
                if self._unwatched():
                    return True
                last, version = version, connection.execute("PRAGMA data_version").fetchone()[0]
                if version == last:
                    continue
                rows = connection.execute(
                    _sql.CHANGED_SINCE.sqlite, {"after": seen, "limit": NOTE_MAX}
                ).fetchall()
                if len(rows) == NOTE_MAX:  # too many to name: wake everyone, who will read them all
                    seen = connection.execute(_sql.CHANGE_HEAD.sqlite).fetchone()[0]
                    self.notify()
                elif rows:
                    seen = rows[-1][0]
                    self.notify({UUID(row[1]) for row in rows})
            return True
        finally:
            connection.close()
