"""Plans on SQLite: stdlib ``sqlite3``, each call's whole transaction in one go.

A small call (a page, an append of a few messages: ``Database.run`` with ``rows`` of at most
``QUICK_ROWS``) runs on
the caller's own thread when it can start at once: its connection is free, no write is queued
and, for a write, no other process holds the database's write lock (asked without waiting).
Its work then takes less time than a trip to another thread and back. A small read whose
first statement is still running after ``QUICK_READ_SECONDS`` (many deleted rows in its way,
say, or large values) stops there and starts over on a reader thread. Anything else, or
anything that would have to wait, runs on threads this store owns, where waiting blocks no
event loop: one writer connection, with writers queued in front of it (SQLite has one writer
at a time; other processes are waited for up to ``BUSY_TIMEOUT_MS``), and reader connections
on a small pool of threads beside it, which WAL allows. The caller awaits those through a
``concurrent.futures`` future, so any thread and any event loop may call.

Writes that queued while the writer was busy commit together (group commit): one
transaction, each plan inside its own savepoint, in queue order. A plan that fails is rolled
back to its savepoint and fails alone; every other is answered only once the shared commit
is done, and fails with it if it fails. One commit writes the pages the plans share (the
conversation row, the index pages they append to) once, instead of once per plan.

Checkpoints run on a thread of their own (``_sqlite_wal``); a write on its caller's thread
never checkpoints.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import operator
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar, cast

from chatmemory import _sqlite_wal
from chatmemory._plan import Plan, Stmt, drive, positional, sqlite_value
from chatmemory._sqlite_wal import Checkpointer, WalFile

T = TypeVar("T")

# A queued write: its plan, its caller's future, and until when (``time.monotonic()``) it may
# wait for another process's write lock, ``BUSY_TIMEOUT_MS`` after it was queued.
_Queued: TypeAlias = tuple[Plan[Any], concurrent.futures.Future[Any], float]
# Each caller's outcome: whether its write succeeded, and its result or its error.
_Outcomes: TypeAlias = dict[concurrent.futures.Future[Any], tuple[bool, Any]]
# At most this many queued writes share a transaction, so none waits long behind the others.
GROUP_MAX = 32

# A small read whose first statement runs longer than this on its caller's thread, by the clock
# and in the thread's own work, starts over on a reader thread, so it holds its caller's event
# loop about this long at most; the clocks are read every ``_CLOCK_STEPS`` steps of SQLite's
# virtual machine and after every ``_CLOCK_ROWS`` rows.
QUICK_READ_SECONDS = 0.002
_CLOCK_STEPS = 2_000
_CLOCK_ROWS = 8

BUSY_TIMEOUT_MS = 30_000
# ``lock.acquire(blocking=False)``, called from C (see ``SQLiteDriver.run_here``).
_TRY_ACQUIRE = operator.methodcaller("acquire", False)
# After ``busy_timeout``, which comes first: the others read the file, and may wait for a lock.
PRAGMAS = (
    "journal_mode = WAL",
    # NORMAL in WAL mode never loses a committed transaction when a process crashes.
    "synchronous = NORMAL",
    "foreign_keys = ON",
)


def configure(connection: Any, *, busy_timeout_ms: int | None = None) -> None:
    """chatmemory's settings on a new DBAPI connection (autocommit: transactions begin explicitly),
    waiting ``busy_timeout_ms`` (default ``BUSY_TIMEOUT_MS``) for another connection's lock."""
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS if busy_timeout_ms is None else busy_timeout_ms}")
    for pragma in PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


_PLAIN = frozenset({str, int, type(None)})


def _params(names: tuple[str, ...], params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple([sqlite_value(params[name]) for name in names])


def _many_params(
    names: tuple[str, ...], rows: list[dict[str, Any]] | list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """``_params`` of each row, encoding once the values rows share (their ids and timestamp);
    positional rows as they are (see ``Stmt``)."""
    if positional(rows):
        return rows
    shared: dict[int, Any] = {}  # by identity: every row is alive until the statement ends
    out = []
    for row in cast(list[dict[str, Any]], rows):
        encoded = []
        for name in names:
            value = row[name]
            if type(value) not in _PLAIN:
                key = id(value)
                if key in shared:
                    value = shared[key]
                else:
                    value = shared[key] = sqlite_value(value)
            encoded.append(value)
        out.append(tuple(encoded))
    return out


# How often, at most, a writer counts the WAL's frames after its commits.
_COUNT_WAL_EVERY = 0.001


# How often, at most, a commit looks whether the database file is still the store's (``FileGone``).
_CHECK_FILE_EVERY = 0.001


def file_of(database: str) -> str:
    """The file a SQLite database's path, or ``file:`` URI, names."""
    if not database.startswith("file:"):
        return database
    return urllib.parse.unquote(urllib.parse.urlsplit(database).path)


def _identity(file: str) -> tuple[int, int] | None:
    """Which file is at ``file`` (device and inode), ``None`` if none is.

    Raises:
        OSError: it cannot be told now (no access, an I/O error).
    """
    try:
        stat = os.stat(file)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


class FileGone(sqlite3.DatabaseError):
    """The database file was deleted or replaced while the store had it open. Its connections
    would go on with the file they opened (gone from every directory, or no longer the one at
    its path) and new ones would open another file: writes acknowledged, then lost, and reads
    of a database other than the one written."""


def connect(path: str, *, wait: bool = True) -> sqlite3.Connection:
    """A configured connection to ``path`` that any one thread at a time may use; one that
    does not ``wait`` fails at once with ``SQLITE_BUSY`` where it would wait for a lock,
    opening included (its first read takes a lock on the file).

    Raises:
        sqlite3.Error: the database cannot be opened (without waiting, when not ``wait``).
    """
    connection = sqlite3.connect(path, check_same_thread=False, uri=path.startswith("file:"))
    try:
        configure(connection, busy_timeout_ms=BUSY_TIMEOUT_MS if wait else 0)
    except BaseException:
        connection.close()
        raise
    return connection


def _busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds a lock this one asked for."""
    # An error the module raises itself (a value it cannot decode, say) has no code.
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


class _Late(Exception):
    """A quick read's first statement ran past ``QUICK_READ_SECONDS`` and was stopped."""

    def __init__(self, statement: Stmt) -> None:
        super().__init__()
        self.statement = statement


def execute(connection: sqlite3.Connection, stmt: Stmt, late: Callable[[], bool] | None = None) -> Any:
    """One statement of a plan on ``connection``: its rows, or the number of rows it changed.

    Raises:
        _Late: ``late()`` answered true after some rows; the statement is stopped there.
    """
    sql = stmt.sql
    if not sql.sqlite:
        return 0 if stmt.count else []  # nothing to do on this backend
    if stmt.many:
        assert isinstance(stmt.params, list)
        connection.executemany(sql.sqlite_numbered, _many_params(sql.sqlite_names, stmt.params))
        return []
    assert isinstance(stmt.params, dict)
    cursor = connection.execute(sql.sqlite_numbered, _params(sql.sqlite_names, stmt.params))
    if stmt.count:
        return cursor.rowcount
    try:
        return _answer(cursor, stmt, late)
    except BaseException:
        # A statement left with rows unread (a row that failed to decode, or a read stopped to
        # go on elsewhere) keeps the connection's read snapshot past the rollback, for every
        # later read on it, until the cursor is collected.
        cursor.close()
        raise


def _answer(cursor: sqlite3.Cursor, stmt: Stmt, late: Callable[[], bool] | None) -> Any:
    """A statement's rows (see ``execute``)."""
    if late is None:
        return cursor.fetchall()
    # A row can be megabytes that SQLite reads in one step of its virtual machine, which the
    # progress handler never sees: the clock is read after every few rows too.
    rows: list[Any] = []
    while batch := cursor.fetchmany(_CLOCK_ROWS):
        rows += batch
        if late():
            raise _Late(stmt)
    return rows


class Closed(RuntimeError):
    """The driver closed before a read that ran long on its caller's thread could go on."""


def _resumed(plan: Plan[T], first: Stmt) -> Plan[T]:
    """``plan`` from ``first`` on: the statement it yielded last, not yet answered."""
    try:
        stmt = first
        while True:
            stmt = plan.send((yield stmt))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        plan.close()


# The drivers of this process, whose transactions a fork waits for (``_hold_for_fork``).
_DRIVERS: weakref.WeakSet[SQLiteDriver] = weakref.WeakSet()
_DRIVERS_GUARD = threading.Lock()
# The drivers a fork holds off, each with the locks it took of theirs.
_HELD: list[tuple[SQLiteDriver, list[threading.Lock]]] = []
# How long a fork waits for the transactions of this process's stores in progress (a write
# waiting out another process's lock included) before it forks all the same.
_FORK_WAIT_SECONDS = BUSY_TIMEOUT_MS / 1000 + 5


def _hold_for_fork() -> None:
    """Before this process forks: wait for the transactions of its stores in progress (writes,
    reads, checkpoints), and hold new ones off until the fork is done.

    SQLite keeps one record of the locks a process holds on a file, shared by all its
    connections to it. A child inherits the parent's as it was at the fork, and nothing in the
    child ever releases a lock the parent held then: after a fork during a write, every write of
    a store the child opens on that file waited out the busy timeout and failed; after one
    during a read, the child's checkpoints never finished and its WAL grew without bound."""
    with _DRIVERS_GUARD:
        drivers = list(_DRIVERS)
    deadline = time.monotonic() + _FORK_WAIT_SECONDS
    for driver in drivers:
        _HELD.append((driver, driver.hold_for_fork(deadline)))


def _release_after_fork(*, child: bool) -> None:
    """After the fork: let the held transactions go on. In the child, whose only thread is the
    one that forked, the locks that thread took are released; anything another thread of the
    parent may have held at the fork (a waiting reader wakes holding its condition's lock) is
    made anew, never waited for."""
    global _DRIVERS_GUARD
    if child:
        _DRIVERS_GUARD = threading.Lock()
    while _HELD:
        driver, locks = _HELD.pop()
        for lock in locks:
            lock.release()
        if child:
            driver.reads = _Reads()
        else:
            driver.reads.release()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(
        before=_hold_for_fork,
        after_in_parent=lambda: _release_after_fork(child=False),
        after_in_child=lambda: _release_after_fork(child=True),
    )


class _Reads:
    """The reads running on reader threads: a fork waits for them to end, and holds new ones off."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._held = False

    def __enter__(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: not self._held)
            self._running += 1

    def __exit__(self, *_: object) -> None:
        with self._changed:
            self._running -= 1
            self._changed.notify_all()

    def hold(self, timeout: float) -> bool:
        """Hold new reads off, and wait up to ``timeout`` seconds for those running to end:
        whether they did (held either way until ``release``)."""
        with self._changed:
            self._held = True
            return self._changed.wait_for(lambda: self._running == 0, timeout)

    def release(self) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()


class SQLiteDriver:
    """Runs plans on a SQLite file from its own threads."""

    def __init__(
        self, path: str, *, memory: bool, readers: int = 2, trace: Callable[[Stmt], None] | None = None
    ) -> None:
        self._path = path
        self.trace = trace
        # The file the store opened, once it did (see ``FileGone``); why it no longer uses it,
        # once it does not.
        self._file = None if memory else file_of(path)
        self._identity: tuple[int, int] | None = None
        self._gone: str | None = None
        self._file_checked = 0.0
        # When a write last failed on another process's write lock (see ``_begin_write``).
        self._busy_failed_at = float("-inf")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._queued: collections.deque[_Queued] = collections.deque()
        # Writes queued or running on the writer thread: a quick write starts only at 0, so it
        # never goes ahead of one.
        self._pending = 0
        # The one writer connection (it never waits for a lock itself: see ``_begin_write``),
        # held by whichever thread writes; and the reader connection for quick reads.
        self._writing = threading.Lock()
        self._write_connection: sqlite3.Connection | None = None
        self._quick_reading = threading.Lock()
        self.reads = _Reads()
        self._quick_reader: sqlite3.Connection | None = None
        self._closing = False
        self._wal: WalFile | None = None
        # A write on a caller's thread left the WAL past twice the limit: the writer thread
        # checkpoints after the next write, which therefore runs there.
        self._checkpoint_due = False
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chatmemory-sqlite-writer")
        # An in-memory database (``_db.in_memory``) is reached through the writer only.
        self.memory = memory
        self._readers = (
            self._writer
            if memory
            else concurrent.futures.ThreadPoolExecutor(readers, thread_name_prefix="chatmemory-sqlite-reader")
        )
        self._checkpoints = None if memory else Checkpointer(lambda: connect(path), self._writing)
        if not memory:
            with _DRIVERS_GUARD:
                _DRIVERS.add(self)
        # A shared in-memory database lives while a connection to it is open: this one, for
        # as long as the store.
        self._keeper = connect(path) if memory else None

    def run_here(self, plan: Plan[T], *, write: bool) -> tuple[T] | concurrent.futures.Future[T] | None:
        """Run ``plan`` on the calling thread if it can start at once: ``(result,)``; else
        ``None``, with the plan untouched (then ``submit`` it). Never waits for anything but
        the plan's own statements. A read whose first statement runs past
        ``QUICK_READ_SECONDS`` goes on from that statement on a reader thread: its future.

        Raises:
            sqlite3.Error: the database failed; nothing was committed.
            Closed: a read that ran long found the driver closed; the plan is closed.
        """
        if self.memory:
            return None  # an in-memory database is reached through the writer only
        self._check_file()
        lock = self._writing if write else self._quick_reading
        taken: list[bool] = []
        connection = None
        try:
            # Taken by C code alone, whose outcome is in ``taken`` before the next bytecode: that
            # is where a signal's handler runs (Ctrl-C, a SIGTERM handler's ``sys.exit``), and
            # raising between the lock taken and this ``try`` would leave it held for good.
            taken.extend(map(_TRY_ACQUIRE, (lock,)))
            if not taken[0]:
                return None
            if self._closing:
                return None  # ``submit`` refuses it
            if write and (self._pending or self._checkpoint_due):
                return None
            connection = self._begin_here(write)
            if connection is None:
                return None
            if not write:
                read = self._read_here(connection, plan)
                if not isinstance(read, _Late):
                    return read
                # Handed on once the lock is released: a fork holds the reader threads'
                # executor while it waits for this lock (``_hold_for_fork``).
                resumed = _resumed(plan, read.statement)
            else:
                result = self._finish(connection, plan)
                if self._wrote():
                    self._checkpoint_due = True
        finally:
            try:
                if connection is not None and connection.in_transaction:
                    # Begun, and left by an exception (a signal's) raised before the plan's own
                    # rollback could run: a transaction left open would hold its lock or snapshot.
                    with contextlib.suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
            finally:
                if taken and taken[0]:  # no call before the release: no signal's handler runs
                    lock.release()
        if not write:
            try:
                return self._readers.submit(self._read, resumed)
            except RuntimeError:
                plan.close()  # (``resumed``, never started, would not close it)
                raise Closed from None
        return (result,)

    def _read_here(self, connection: sqlite3.Connection, plan: Plan[T]) -> tuple[T] | _Late:
        """A quick read in the transaction begun on ``connection``: ``(result,)``; or, when its
        first statement runs past ``QUICK_READ_SECONDS``, rolled back, and the statement it
        stopped at, for a reader thread to go on from (a new transaction: the plan has seen
        nothing yet)."""
        wall = time.perf_counter() + QUICK_READ_SECONDS
        work = time.thread_time() + QUICK_READ_SECONDS

        def late() -> bool:
            # Time this thread did not run (other processes', the interpreter lock held by
            # another thread) is not the read's own: starting over elsewhere gives none back.
            return time.perf_counter() > wall and time.thread_time() > work

        # ``late`` for SQLite's progress handler, answered by C code alone: the first instruction
        # of a Python callback is where a signal that came while SQLite worked has its handler
        # run, and the sqlite3 module drops what a progress handler raises (Ctrl-C, a SIGTERM
        # handler's ``sys.exit``), taking it for "stop". False while the wall clock is short of
        # ``wall``; from then on, whether the thread's clock is past ``work``.
        late_here: Callable[[], bool] = itertools.chain(
            itertools.takewhile(operator.not_, map(wall.__lt__, iter(time.perf_counter, None))),
            map(work.__lt__, iter(time.thread_time, None)),
        ).__next__

        step = self._step(connection)
        first = self._step(connection, late)
        started = False

        def first_in_time(stmt: Stmt) -> Any:
            nonlocal started
            if started:
                return step(stmt)
            started = True
            connection.set_progress_handler(late_here, _CLOCK_STEPS)
            try:
                return first(stmt)
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT:
                    raise _Late(stmt) from None
                raise
            finally:
                connection.set_progress_handler(None, 0)

        try:
            result = drive(plan, first_in_time)
            connection.execute("COMMIT")
        except _Late as stopped:
            connection.execute("ROLLBACK")
            return stopped
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            plan.close()
            raise
        return (result,)

    def _begin_here(self, write: bool) -> sqlite3.Connection | None:
        """Begin a quick call's transaction on its connection (opened here if need be, holding
        its lock), or ``None`` where that would wait for a lock.

        Raises:
            sqlite3.Error: the database failed; no transaction is left open.
        """
        connection = self._write_connection if write else self._quick_reader
        try:
            if connection is None:
                connection = self._open_writer(wait=False) if write else self._open_quick_reader()
            if write:
                connection.execute("BEGIN IMMEDIATE")  # fails at once while another process writes
            else:
                connection.execute("BEGIN")
                # Takes the read snapshot now, where waiting (only while a crashed WAL is being
                # recovered) fails at once; the plan's reads then never wait.
                connection.execute("PRAGMA schema_version").fetchall()
        except BaseException as exc:
            if connection is not None and connection.in_transaction:
                connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
                return None  # wait on the store's threads instead
            raise
        return connection

    def submit(self, plan: Plan[T], *, write: bool) -> concurrent.futures.Future[T]:
        """Queue the plan on the writer (``write``) or a reader thread.

        Raises:
            RuntimeError: the driver is closed.
        """
        if not write:
            return self._readers.submit(self._read, plan)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            # Scheduled first: a closed writer refuses before the plan is queued. The drain
            # takes the queue under this lock, so it finds the plan.
            self._writer.submit(self._drain)
            self._queued.append((plan, future, time.monotonic() + BUSY_TIMEOUT_MS / 1000))
            self._pending += 1
        return future

    def hold(self) -> tuple[concurrent.futures.Future[None], threading.Event]:
        """Keep the writer idle, between two transactions, until the event is set; the future is
        done once it is (then, in memory, no connection of this store is in a transaction)."""
        idle: concurrent.futures.Future[None] = concurrent.futures.Future()
        release = threading.Event()

        def held() -> None:
            if idle.set_running_or_notify_cancel():  # else whoever waited for it gave up
                idle.set_result(None)
                release.wait()

        self._writer.submit(held)
        return idle, release

    def _keep(self, connection: sqlite3.Connection) -> sqlite3.Connection:
        with self._lock:
            self._connections.append(connection)
        return connection

    def _open_writer(self, *, wait: bool) -> sqlite3.Connection:
        """The writer connection (call holding ``_writing``), opened waiting for locks only if
        ``wait``; it then waits for none (see ``_begin_write``).

        Raises:
            sqlite3.Error: it cannot be opened (without waiting, when not ``wait``).
        """
        self._check_file(now=True)
        connection = connect(self._path, wait=wait)
        try:
            if self._checkpoints is not None:
                wal = WalFile(connection)
                # This store decides when its writer checkpoints (see ``_sqlite_wal``).
                connection.execute("PRAGMA wal_autocheckpoint = 0")
                connection.execute(f"PRAGMA journal_size_limit = {wal.file_limit}")
                self._wal = wal
            if wait:
                connection.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            connection.close()
            raise
        self._write_connection = self._keep(connection)
        return connection

    def _open_quick_reader(self) -> sqlite3.Connection:
        """The connection of quick reads (call holding ``_quick_reading``)."""
        self._check_file(now=True)
        self._quick_reader = self._keep(connect(self._path, wait=False))
        return self._quick_reader

    def _reader(self) -> sqlite3.Connection:
        """This reader thread's connection."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            self._check_file(now=True)
            connection = self._local.connection = self._keep(connect(self._path))
        return connection

    def _begin_write(self, deadline: float) -> sqlite3.Connection:
        """Begin a write on the writer connection (call holding ``_writing``), waiting until
        ``deadline`` (``time.monotonic()``), or a thirtieth of ``BUSY_TIMEOUT_MS`` if that is
        later, for another process's write to end. The connection waits for no lock otherwise,
        so a quick write never blocks its caller's thread on one.

        Raises:
            sqlite3.OperationalError: another process held the lock until ``deadline`` (busy).
        """
        connection = self._write_connection or self._open_writer(wait=True)
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            # Never less than a thirtieth of the timeout (a second), unless a write failed on the
            # lock that recently: a write that waited its time behind the writer's other work
            # still waits out a moment's contention, while those queued behind a lock held all
            # along fail at once, not a second each.
            floor = BUSY_TIMEOUT_MS // 30
            if time.monotonic() - self._busy_failed_at < floor / 1000:
                floor = 0
            wait_ms = max(int((deadline - time.monotonic()) * 1000), floor)
            if wait_ms <= 0:
                self._busy_failed_at = time.monotonic()
                raise
            connection.execute(f"PRAGMA busy_timeout = {wait_ms}")
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as again:
                if _busy(again):
                    self._busy_failed_at = time.monotonic()
                raise
            finally:
                connection.execute("PRAGMA busy_timeout = 0")
        return connection

    def _step(
        self, connection: sqlite3.Connection, late: Callable[[], bool] | None = None
    ) -> Callable[[Stmt], Any]:
        trace = self.trace

        def step(stmt: Stmt) -> Any:
            if trace is not None:
                trace(stmt)
            return execute(connection, stmt, late)

        return step

    def _read(self, plan: Plan[T]) -> T:
        """On a reader thread."""
        self._check_file()
        connection = self._reader()
        with self.reads:
            connection.execute("BEGIN")
            return self._finish(connection, plan)

    def _finish(self, connection: sqlite3.Connection, plan: Plan[T]) -> T:
        """Run ``plan`` in the transaction begun on ``connection``, then commit; roll back if
        it raises."""
        try:
            result = drive(plan, self._step(connection))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            plan.close()
        return result

    def _drain(self) -> None:
        """On the writer thread: run the queued writes, those that queued together in one
        transaction. A caller that withdrew its write before it started is skipped. Callers
        are answered once the writer is free again, so one that goes on at once with another
        small write finds it free."""
        with self._lock:
            taken = [self._queued.popleft() for _ in range(min(GROUP_MAX, len(self._queued)))]
        outcomes: dict[concurrent.futures.Future[Any], tuple[bool, Any]] = {}
        try:
            with self._writing:
                self._drain_taken(taken, outcomes)
                if (taken and self._wrote()) or self._checkpoint_due:
                    self._checkpoint_due = False
                    # Fails only while another process checkpoints: a later write tries again.
                    with contextlib.suppress(sqlite3.Error):
                        assert self._checkpoints is not None and self._write_connection is not None
                        self._checkpoints.checkpoint(self._write_connection)
        finally:
            with self._lock:
                self._pending -= len(taken)
            for future, (succeeded, value) in outcomes.items():
                if succeeded:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _check_file(self, *, now: bool = False) -> None:
        """Before a call or a new connection: raise ``FileGone`` once the database file is found
        deleted or replaced, looked for ``now`` or at most every ``_CHECK_FILE_EVERY`` (so only
        writes made within that time of a deletion can be acknowledged and lost).

        Raises:
            FileGone: the database file is not the one the store opened.
        """
        if self._file is None:
            return  # in memory
        try:
            if self._identity is None:
                self._identity = _identity(self._file)  # none until the first connection makes it
                return
            at = time.monotonic()
            if self._gone is None and (now or at - self._file_checked >= _CHECK_FILE_EVERY):
                self._file_checked = at
                if _identity(self._file) != self._identity:
                    self._gone = (
                        f"the database file {self._file!r} was deleted or replaced while the store had "
                        "it open; open the store again on the file now there"
                    )
        except OSError:
            pass  # cannot be told now (no access, an I/O error): the next look will
        if self._gone is not None:
            raise FileGone(self._gone)

    def _wrote(self) -> bool:
        """After a commit (holding ``_writing``): wake the background checkpoint, in a hurry
        once the WAL is past the limit. Answers whether the WAL is past twice the limit (the
        background checkpoint is not keeping up)."""
        if self._checkpoints is None or self._wal is None:
            return False
        # A count reads a few frame headers (2-3 µs); a small write takes about 100. Counted at
        # most every millisecond, it lags by a few writes' pages, against a limit of 4,000.
        pages = self._wal.pages(max_age=_COUNT_WAL_EVERY)
        limit = _sqlite_wal.WAL_LIMIT_PAGES
        self._checkpoints.request(hurry=pages > limit)
        return pages > 2 * limit

    def _drain_taken(self, taken: list[_Queued], outcomes: _Outcomes) -> None:
        """Run ``taken`` (holding ``_writing``), adding each caller's outcome to ``outcomes``.

        While another process holds the write lock, each write waits for it until its own
        deadline, ``BUSY_TIMEOUT_MS`` after it was queued (time spent queued behind writes that
        waited counts), then fails alone; the others of its group wait on."""
        group = []
        for plan, future, deadline in taken:
            if future.set_running_or_notify_cancel():
                group.append((plan, future, deadline))
            else:
                plan.close()
        try:
            self._check_file()
            while group:
                try:
                    # IMMEDIATE takes the write lock up front: two writers never deadlock on an upgrade.
                    connection = self._begin_write(min(deadline for *_, deadline in group))
                except sqlite3.OperationalError as exc:
                    if not _busy(exc):
                        raise
                    now = time.monotonic()
                    expired = [queued for queued in group if queued[2] <= now + 0.001]
                    for plan, future, _ in expired:
                        plan.close()
                        future.set_exception(exc)  # at once, not once the rest of the group is done
                    group = [queued for queued in group if queued not in expired]
                    continue
                if len(group) == 1:
                    plan, future, _ = group[0]
                    outcomes[future] = (True, self._finish(connection, plan))
                else:
                    self._run_group(connection, group, outcomes)
                break
        except BaseException as exc:
            # Whatever failed (a plan, the commit, or the connection itself), every caller of
            # the group without an outcome yet gets this one, never left waiting.
            for plan, future, _ in group:
                plan.close()
                outcomes.setdefault(future, (False, exc))

    def _run_group(self, connection: sqlite3.Connection, group: list[_Queued], outcomes: _Outcomes) -> None:
        """Run ``group`` in one transaction begun on ``connection``, each plan in its own
        savepoint. A plan that fails has its error as its outcome at once; the others their
        results once the commit is done.

        Raises:
            BaseException: the transaction failed as a whole; nothing of it was kept.
        """
        step = self._step(connection)
        done: list[tuple[concurrent.futures.Future[Any], Any]] = []
        try:
            for plan, future, _ in group:
                connection.execute("SAVEPOINT plan")
                try:
                    result = drive(plan, step)
                except BaseException as exc:
                    if not connection.in_transaction:
                        raise  # the database ended the transaction: nothing of the group is kept
                    connection.execute("ROLLBACK TO plan")
                    outcomes[future] = (False, exc)
                else:
                    done.append((future, result))
                finally:
                    plan.close()
                connection.execute("RELEASE plan")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        for future, result in done:
            outcomes[future] = (True, result)

    def hold_for_fork(self, deadline: float) -> list[threading.Lock]:
        """Wait (until ``deadline``, ``time.monotonic()``) for this store's transactions in
        progress and hold new ones off (see ``_hold_for_fork``): the locks taken, and the
        reads held off until ``reads.release()``. Nothing once the driver is closing."""
        if self._closing:
            return []
        taken: list[threading.Lock] = []
        # The writers' lock before the checkpoints', as a checkpoint takes them.
        checkpoints = [self._checkpoints.running] if self._checkpoints is not None else []
        for lock in [self._writing, *checkpoints, self._quick_reading]:
            # A close begun meanwhile takes the writers' lock for good: given up on then.
            while not self._closing:
                if lock.acquire(timeout=min(0.05, max(deadline - time.monotonic(), 0))):
                    taken.append(lock)
                    break
                if time.monotonic() >= deadline:
                    break
        self.reads.hold(max(deadline - time.monotonic(), 0))
        return taken

    def close(self) -> None:
        """Finish queued work, then close every connection (blocking: run it on a thread)."""
        with _DRIVERS_GUARD:
            _DRIVERS.discard(self)
        self._closing = True
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if self._checkpoints is not None:
            self._checkpoints.close()  # before taking ``_writing``, which it may be waiting for
        # Waits for quick calls running on other threads, and keeps later ones from starting.
        self._writing.acquire()
        self._quick_reading.acquire()
        # First: the last connection to close deletes the WAL file, which a descriptor still
        # open keeps it from on Windows.
        if self._wal is not None:
            self._wal.close()
        if self._keeper is not None:
            self._keeper.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
