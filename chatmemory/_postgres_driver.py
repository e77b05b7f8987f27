"""Plans on PostgreSQL: asyncpg directly, one pool, prepared statements.

asyncpg prepares and caches every statement per connection, so a plan's statements are
parsed once per connection.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypeVar, cast

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import URL

from chatmemory._plan import KeyTaken, Plan, Stmt, collector_paused, positional, postgres_value
from chatmemory._postgres_url import connect_options
from chatmemory._rows import unreadable
from chatmemory._sql import KEY_INDEX
from chatmemory.errors import ChatMemoryError, StorageError

T = TypeVar("T")
# A fallback makes the plan that runs in its plan's place when a key it left unread was stored
# (``Stmt.unread_keys``), in the same call: on its connection, and in its place among queued writes.
_Fallback: TypeAlias = Callable[[], Plan[Any]] | None
# A queued write: its plan, its caller's future, its fallback, and until when (``time.monotonic()``)
# it may wait for locks other sessions hold, ``LOCK_TIMEOUT_MS`` after it was queued.
_Queued: TypeAlias = tuple[Plan[Any], concurrent.futures.Future[Any], _Fallback, float]
# At most this many queued writes of a group share a transaction, so none waits long behind the others.
GROUP_MAX = 32
# How long a close waits for calls already running, then for the pool to close, before it ends them.
CLOSE_TIMEOUT = 10.0
# A kept connection no call took for this long (at most twice this) goes back to the pool, whose own
# timer closes it once it has been idle there too.
KEEP_SECONDS = 60.0
# How long a statement waits for a lock another session holds (a row, a table being altered) before
# it fails, as a SQLite write waits for another process's: a write, and a cancelled caller waiting
# for its outcome, never wait forever on a transaction left open elsewhere.
LOCK_TIMEOUT_MS = 30_000


# Timestamps as asyncpg's "tuple" format has them: microseconds since 2000-01-01 UTC.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# The last and first instants a store accepts, which asyncpg writes as 'infinity' and '-infinity'.
_LAST, _FIRST = datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)
_INFINITY, _NEGATIVE_INFINITY = 0x7FFF_FFFF_FFFF_FFFF, -0x8000_0000_0000_0000
# Each distinct timestamp read is decoded once and then shared (a transcript's messages share
# their appends' times): a few thousand kept, forgotten all at once past this many.
_TIMES: dict[int, datetime] = {}
_TIMES_KEPT = 16_384


def _decode_time(value: tuple[int]) -> datetime:
    """A ``timestamptz`` as an aware UTC ``datetime``, what asyncpg's own codec gives (whose
    decoding is about two thirds of what reading a message's row costs), from a cache.

    'infinity' and '-infinity' are what asyncpg writes for the last and first instants a store
    accepts (``_encode_time``): they read as those instants, in UTC as every other time, where
    asyncpg's own codec reads the naive ``datetime.max`` and ``min``."""
    micros = value[0]
    found = _TIMES.get(micros)
    if found is None:
        if len(_TIMES) >= _TIMES_KEPT:
            _TIMES.clear()
        if micros == _INFINITY:
            found = _LAST
        elif micros == _NEGATIVE_INFINITY:
            found = _FIRST
        else:  # beyond Python's years, OverflowError as with asyncpg's codec (see ``_drive``)
            found = _EPOCH + timedelta(0, 0, micros)
        _TIMES[micros] = found
    return found


# What asyncpg writes as 'infinity' and '-infinity': the naive ``datetime.max`` and ``min``, and
# whatever falls on them in UTC.
_AT_INFINITY = {
    (_LAST - _EPOCH) // _MICROSECOND: _INFINITY,
    (_FIRST - _EPOCH) // _MICROSECOND: _NEGATIVE_INFINITY,
}


def _encode_time(value: datetime) -> tuple[int]:
    """A ``datetime`` as a ``timestamptz``, as asyncpg's own codec writes it (a naive one is
    local time)."""
    if value == datetime.max:
        return (_INFINITY,)
    if value == datetime.min:
        return (_NEGATIVE_INFINITY,)
    micros = (value.astimezone(UTC) - _EPOCH) // _MICROSECOND
    return (_AT_INFINITY.get(micros, micros),)


async def set_up(connection: asyncpg.Connection) -> None:
    """The store's settings on a new connection of its pool: timestamps decoded through the cache."""
    await connection.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=_encode_time, decoder=_decode_time, format="tuple"
    )


async def run_on(
    connection: asyncpg.Connection,
    plan: Plan[T],
    trace: Callable[[Stmt], None] | None,
    *,
    write: bool,
    fallback: Callable[[], Plan[T]] | None = None,
) -> T:
    """Run ``plan`` on ``connection``: a write in one transaction; a read statement by statement,
    each its own transaction, which under READ COMMITTED reads what it would inside one (each
    statement takes its own snapshot there too) without the round trips of BEGIN and COMMIT,
    unless its first statement asks for one ``snapshot`` for all (see ``Stmt``). A write that is
    one statement ``alone`` is that statement's own transaction. Where a key ``plan`` left unread
    was stored (``KeyTaken``: it wrote nothing), ``fallback``'s plan runs in its place."""
    try:
        return await _run_on(connection, plan, trace, write=write)
    except KeyTaken:
        if fallback is None:
            raise
    # Out of the handler, so that an error of the fallback is not chained to the refusal.
    return await _run_on(connection, fallback(), trace, write=True)


async def _run_on(
    connection: asyncpg.Connection, plan: Plan[T], trace: Callable[[Stmt], None] | None, *, write: bool
) -> T:
    try:
        first = next(plan)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except BaseException:
        plan.close()
        raise
    if write and not first.alone:
        async with connection.transaction():
            return await _drive(connection, plan, trace, first)
    if first.snapshot and not write:
        return await _read_in_one_snapshot(connection, plan, trace, first)
    return await _drive(connection, plan, trace, first)


async def _read_in_one_snapshot(
    connection: asyncpg.Connection, plan: Plan[T], trace: Callable[[Stmt], None] | None, stmt: Stmt
) -> T:
    """Run a read in one ``REPEATABLE READ READ ONLY`` transaction, from ``stmt`` on.

    A statement prepared before a change of the schema that changes its result's types (an
    ``ALTER TABLE ... TYPE``) fails once on each connection that cached it: asyncpg prepares it
    again by itself only outside a transaction. The read wrote nothing, so it runs again, once,
    in a new snapshot: the statements the plan had answers to are sent again first, and the read
    goes on only if they answer the same (else the error stands)."""
    answered: list[tuple[Stmt, Any]] = []
    failed: asyncpg.InvalidCachedStatementError | None = None
    try:
        while True:
            try:
                async with connection.transaction(isolation="repeatable_read", readonly=True):
                    if failed is not None:
                        for sent, rows in answered:
                            if trace is not None:
                                trace(sent)
                            if await execute(connection, sent) != rows:
                                raise failed  # read otherwise than before: the plan cannot go on
                    while True:
                        if trace is not None:
                            trace(stmt)
                        rows = await execute(connection, stmt)
                        answered.append((stmt, rows))
                        try:
                            stmt = plan.send(rows)
                        except StopIteration as done:
                            return done.value  # type: ignore[no-any-return]
            except asyncpg.InvalidCachedStatementError as exc:
                if failed is not None:
                    raise
                failed = exc
    finally:
        plan.close()


async def _drive(
    connection: asyncpg.Connection,
    plan: Plan[T],
    trace: Callable[[Stmt], None] | None,
    stmt: Stmt | None = None,
) -> T:
    """Run ``plan`` (from ``stmt`` on, when its first statement was taken already)."""
    try:
        if stmt is None:
            stmt = next(plan)
        alone = stmt.alone
        while True:
            if trace is not None:
                trace(stmt)
            try:
                rows = await execute(connection, stmt)
            except asyncpg.UniqueViolationError as exc:
                if stmt.unread_keys and exc.constraint_name == KEY_INDEX:
                    raise KeyTaken from exc
                raise
            except OverflowError as exc:  # a time read beyond Python's years (asyncpg wraps a parameter's)
                raise unreadable("time", exc) from exc
            stmt = plan.send(rows)
            if alone:
                raise RuntimeError("a plan went on after the statement it said was its whole write")
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        plan.close()


# Between two writes of a shared transaction one round trip ends the savepoint of the first (a
# simple query may hold several commands) and starts the second's; after a write that failed,
# rolling back to its savepoint leaves that savepoint in place for the next. Each write then
# gets what is left of its own lock wait (see ``_LockWaits``).
_NEXT_SAVEPOINT = "RELEASE SAVEPOINT plan; SAVEPOINT plan"
_UNDO_SAVEPOINT = "ROLLBACK TO SAVEPOINT plan"
# A queued write that waited longer than this already runs with the rest of its lock wait.
_LATE = 0.05
# Seconds after a group sent at once met a stored key during which keyed groups are not.
_KEYS_TAKEN_QUIET = 1.0


class _LockWaits:
    """When a write last failed on a lock held elsewhere (``time.monotonic()``), for the floor
    of ``wait``; and when a group's statements sent at once last met a stored key, for
    ``send_keyed``."""

    def __init__(self) -> None:
        self.failed_at = float("-inf")
        self.key_taken_at = float("-inf")

    def failed(self, exc: BaseException) -> None:
        """Note why a write failed."""
        if isinstance(exc, asyncpg.LockNotAvailableError):
            self.failed_at = time.monotonic()
        elif isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name == KEY_INDEX:
            self.key_taken_at = time.monotonic()

    def send_keyed(self) -> bool:
        """Whether appends with keys they did not look up may be sent at once: not within a
        second of one meeting a stored key (callers sending again what was stored), when such
        a group would mostly fail and run again one savepoint each."""
        return time.monotonic() - self.key_taken_at > _KEYS_TAKEN_QUIET

    def wait(self, deadline: float) -> str:
        """The command giving the write whose lock waits end at ``deadline`` the rest of its
        time, so that a write queued behind others that waited for a lock (the writes of a group
        wait in turn) waits about ``LOCK_TIMEOUT_MS`` from its call in all, not that much more
        each time. Never less than a thirtieth of the timeout (a second), unless a write failed
        on a lock that recently: a write that spent its time waiting for a pooled connection
        still waits out a moment's contention, while those queued behind a lock held all along
        fail at once, not a second each."""
        floor = LOCK_TIMEOUT_MS // 30
        if time.monotonic() - self.failed_at < floor / 1000:
            floor = 1  # 0 would be no limit at all
        return f"SET LOCAL lock_timeout = {max(int((deadline - time.monotonic()) * 1000), floor, 1)}"


async def _drive_in_savepoint(
    connection: asyncpg.Connection, plan: Plan[T], fallback: _Fallback, trace: Callable[[Stmt], None] | None
) -> T:
    """Drive ``plan`` in the savepoint just started; where it met a stored key (``KeyTaken``),
    roll back to the savepoint and drive ``fallback``'s plan in it instead."""
    try:
        return await _drive(connection, plan, trace)
    except KeyTaken:
        if fallback is None:
            raise
    # Out of the handler, so that an error of the fallback is not chained to the refusal.
    await connection.execute(_UNDO_SAVEPOINT)  # the savepoint stays for the fallback
    return await _drive(connection, fallback(), trace)


async def _each_in_a_savepoint(
    connection: asyncpg.Connection,
    batch: list[_Queued],
    trace: Callable[[Stmt], None] | None,
    lock_waits: _LockWaits,
) -> list[tuple[concurrent.futures.Future[Any], Any]]:
    """Drive ``batch``'s plans one after another in the connection's transaction, each in a
    savepoint: one that fails is rolled back to it and its caller answered with the error; the
    others are returned with their results, to answer once the transaction commits."""
    answered: list[tuple[concurrent.futures.Future[Any], Any]] = []
    before = "SAVEPOINT plan"
    for plan, future, fallback, deadline in batch:
        await connection.execute(f"{before}; {lock_waits.wait(deadline)}")
        try:
            result = await _drive_in_savepoint(connection, plan, fallback, trace)
        except Exception as exc:
            lock_waits.failed(exc)
            future.set_exception(exc)
            before = _UNDO_SAVEPOINT
        else:
            answered.append((future, result))
            before = _NEXT_SAVEPOINT
    if before == _UNDO_SAVEPOINT:
        await connection.execute(_UNDO_SAVEPOINT)
    return answered


class _Uneven(Exception):
    """Statements sent at once answered other than one row each."""


async def _commit_together(
    connection: asyncpg.Connection,
    batch: list[_Queued],
    trace: Callable[[Stmt], None] | None,
    lock_waits: _LockWaits,
) -> list[tuple[concurrent.futures.Future[Any], Any]]:
    """Run ``batch``'s writes in one transaction, to commit together; the callers to answer
    once it has committed, with their results (those whose write failed are answered already).

    Writes that are each one statement ``alone`` (it writes nothing where its plan fails), of
    one text, answering one row each (an append), are sent at once: ``BEGIN`` with the lock
    wait, every statement in one round trip (asyncpg's ``fetchmany`` pipelines a statement over
    many parameter sets) and ``COMMIT``, whatever their number (not those with keys just after
    some met a stored key, see ``_LockWaits.send_keyed``). Their plans are given their rows
    only once every statement ran, so where one fails or answers no row (the transaction is
    then rolled back whole) the writes run again one savepoint each
    (``_each_in_a_savepoint``), where each fails alone, from the statements they began with.
    """
    answered: list[tuple[concurrent.futures.Future[Any], Any]] = []
    started: list[tuple[_Queued, Stmt]] = []
    for queued in batch:
        plan, future = queued[0], queued[1]
        try:
            started.append((queued, next(plan)))
        except StopIteration as done:
            answered.append((future, done.value))
        except Exception as exc:
            plan.close()
            future.set_exception(exc)
    stmts = [stmt for _, stmt in started]
    keyed = any(stmt.unread_keys for stmt in stmts)
    if (
        len(stmts) > 1
        and all(_sent_together(s, stmts[0]) for s in stmts)
        and (not keyed or lock_waits.send_keyed())
    ):
        together = await _pipelined(connection, started, trace, lock_waits)
        if together is not None:
            return answered + together
    async with connection.transaction():
        replayed = [(_replay(stmt, queued[0]), *queued[1:]) for queued, stmt in started]
        return answered + await _each_in_a_savepoint(connection, replayed, trace, lock_waits)


def _sent_together(stmt: Stmt, first: Stmt) -> bool:
    plain = not (stmt.many or stmt.count or stmt.bulk or stmt.snapshot)
    return plain and stmt.alone and bool(stmt.sql.postgres) and stmt.sql.postgres == first.sql.postgres


async def _pipelined(
    connection: asyncpg.Connection,
    started: list[tuple[_Queued, Stmt]],
    trace: Callable[[Stmt], None] | None,
    lock_waits: _LockWaits,
) -> list[tuple[concurrent.futures.Future[Any], Any]] | None:
    """The writes ``started`` sent at once in a transaction (see ``_commit_together``), committed;
    ``None`` if their statements failed or did not answer a row each (rolled back, nothing
    given to the plans)."""
    sql = started[0][1].sql
    # ``BEGIN`` and the lock wait in one round trip, as a savepoint and its lock wait are.
    await connection.execute(f"BEGIN; {lock_waits.wait(min(queued[3] for queued, _ in started))}")
    try:
        try:
            for _, stmt in started:
                if trace is not None:
                    trace(stmt)
            args = [
                [postgres_value(cast(dict[str, Any], stmt.params)[name]) for name in sql.names]
                for _, stmt in started
            ]
            rows = await connection.fetchmany(sql.postgres, args)
            if len(rows) != len(started):
                raise _Uneven
        except Exception as exc:
            # Always rolled back: asyncpg leaves the statements before one it could not encode
            # run, not failed.
            lock_waits.failed(exc)
            await connection.execute("ROLLBACK")
            return None
        answered = []
        for ((plan, future, *_), _), row in zip(started, rows, strict=True):
            try:
                plan.send([row])
            except StopIteration as done:
                answered.append((future, done.value))
            except Exception as exc:  # the plan refused what its statement found: it wrote nothing
                future.set_exception(exc)
            else:
                raise RuntimeError("a plan went on after the statement it said was its whole write")
            finally:
                plan.close()
    except BaseException:
        with contextlib.suppress(Exception):
            await connection.execute("ROLLBACK")
        raise
    await connection.execute("COMMIT")
    return answered


def _replay(first: Stmt, plan: Plan[T]) -> Plan[T]:
    """``plan``, whose first statement ``first`` was taken already, from that statement on."""
    try:
        stmt = first
        while True:
            rows = yield stmt
            try:
                stmt = plan.send(rows)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
    finally:
        plan.close()


async def execute(connection: asyncpg.Connection, stmt: Stmt) -> Any:
    sql = stmt.sql
    if not sql.postgres:
        return 0 if stmt.count else []  # nothing to do on this backend
    if stmt.many:
        assert isinstance(stmt.params, list) and not positional(stmt.params)
        rows = cast(list[dict[str, Any]], stmt.params)
        await connection.executemany(
            sql.postgres, [[postgres_value(p[name]) for name in sql.names] for p in rows]
        )
        return []
    assert isinstance(stmt.params, dict)
    args = [postgres_value(stmt.params[name]) for name in sql.names]
    if stmt.count:
        status = await connection.execute(sql.postgres, *args)
        return int(status.rsplit(" ", 1)[-1])
    if stmt.bulk:  # asyncpg's records and ids are objects the collector tracks
        with collector_paused():
            return await connection.fetch(sql.postgres, *args)
    return await connection.fetch(sql.postgres, *args)


def _fail_queued(queue: collections.deque[_Queued]) -> None:
    """Fail the writes still queued, the store being closed (those withdrawn are skipped)."""
    while queue:
        plan, future, *_ = queue.popleft()
        plan.close()
        _refuse(future)


def _refuse(future: concurrent.futures.Future[Any]) -> None:
    """Fail ``future`` because the store closed, unless it was answered or withdrawn. Only the
    driver's loop moves a future from pending to running, so this runs on that loop or once it
    has stopped; a caller may still withdraw a pending one meanwhile, which then stays withdrawn."""
    if future.done():
        return
    if future.running() or future.set_running_or_notify_cancel():
        future.set_exception(StorageError("the store is closed"))


async def _session_unchanged(connection: asyncpg.Connection) -> None:
    """A connection going back to the pool needs no reset query: plans set no session settings,
    take no session locks, listen to nothing and leave no cursor open, and asyncpg still rolls
    back a transaction left open. The default reset would cost a round trip per call."""


class PostgresDriver:
    """Runs plans on an asyncpg pool that lives on an event loop of its own, in a thread it owns.

    asyncpg connections belong to the loop that opened them; keeping them on the store's own
    loop lets any thread and any event loop call (even one made by ``asyncio.run`` for a single
    call), and no caller's loop can block the pool.
    """

    def __init__(
        self,
        url: URL,
        *,
        max_size: int = 10,
        trace: Callable[[Stmt], None] | None = None,
        connect_args: Mapping[str, Any] | None = None,
    ) -> None:
        # Every connection the store opens, pooled or listening, connects as its engine does.
        self._options = connect_options(url, connect_args)
        self._max_size = max_size
        self.trace = trace
        self._pool: asyncpg.Pool | None = None
        # Connections a call gave back clean, kept out of the pool for the next call (see ``_acquire``),
        # the most recently kept last; the first ``_unused`` of them no call took since the last sweep.
        self._idle: list[asyncpg.Connection] = []
        self._unused = 0
        self._sweep: asyncio.TimerHandle | None = None
        self._acquiring = 0
        self._pool_closing = False
        self._listen_asked = False
        self._listening_task: asyncio.Task[None] | None = None
        self._groups: dict[Hashable, collections.deque[_Queued]] = {}
        self._lock_waits = _LockWaits()  # shared by the groups: one lock held elsewhere stops them all
        self._committing: set[asyncio.Task[None]] = set()
        self._running: set[asyncio.Task[None]] = set()
        # Held while a call is handed to the loop, so none is handed once a close has begun; the
        # futures handed out and not yet answered are failed if the loop stops without answering.
        self._lock = threading.Lock()
        self._closing = False
        self._unanswered: set[concurrent.futures.Future[Any]] = set()
        self.listening = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="chatmemory-postgres", daemon=True
        )
        self._thread.start()

    def submit(
        self,
        plan: Plan[T],
        *,
        write: bool,
        group: Hashable = None,
        fallback: Callable[[], Plan[T]] | None = None,
    ) -> concurrent.futures.Future[T]:
        """Start the plan on the store's loop (see ``run_on``).

        Writes of one ``group`` (an append's history) run one transaction at a time, and those
        that queue meanwhile commit together (see ``_commit_group``); the future of a grouped
        write stays pending, so cancellable, until its transaction takes it.

        Raises:
            RuntimeError: the driver is closed or closing.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("the driver is closed")
            if group is None:
                self._loop.call_soon_threadsafe(self._start, plan, write, future, fallback)
            else:
                self._loop.call_soon_threadsafe(self._enqueue, group, plan, future, fallback)
            self._unanswered.add(future)
        future.add_done_callback(self._answered)
        return future

    def _answered(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._unanswered.discard(future)

    def _start(
        self, plan: Plan[Any], write: bool, future: concurrent.futures.Future[Any], fallback: _Fallback
    ) -> None:
        if future.cancelled():
            plan.close()  # withdrawn before the loop took it
            return
        task = self._loop.create_task(_answer(future, self._run(plan, write, fallback, future)))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            options = {"statement_cache_size": 256, **self._options}
            # READ COMMITTED whatever the database's or role's default: a write locks its rows,
            # then reads what is committed by then (see ``run_on``); under a stricter level
            # concurrent writes to one conversation would fail to serialize.
            settings = {
                **(options.get("server_settings") or {}),
                "lock_timeout": f"{LOCK_TIMEOUT_MS}ms",
                "default_transaction_isolation": "read committed",
            }
            options["server_settings"] = settings
            self._pool = await asyncpg.create_pool(
                min_size=0, max_size=self._max_size, init=set_up, reset=_session_unchanged, **options
            )
        return self._pool

    async def _acquire(self) -> asyncpg.Connection:
        """A connection for one call: the last one given back clean, else one from the pool.

        asyncpg's acquire and release (a queue, a shielded task, a reset) cost about a third of
        a small read's own time on this side; a connection kept here costs a list's pop.
        """
        while self._idle:
            connection = self._idle.pop()
            self._unused = min(self._unused, len(self._idle))
            if _alive(connection):
                return connection
            # Closed without asyncpg's cleanup (a protocol abort), it still holds its pool slot,
            # which the pool frees and connects again once it takes it back.
            assert self._pool is not None
            await self._pool.release(connection)
        self._acquiring += 1
        try:
            return await (await self._connection_pool()).acquire()
        finally:
            self._acquiring -= 1

    async def _release(self, connection: asyncpg.Connection, *, clean: bool) -> None:
        """Keep ``connection`` for the next call if its call ended cleanly (no error, no
        transaction left open) and no call waits for the pool; else the pool takes it back,
        with its checks, and wakes whoever waits."""
        if (
            clean
            and not self._acquiring
            and not self._pool_closing
            and _alive(connection)
            and not connection.is_in_transaction()
        ):
            self._idle.append(connection)
            if self._sweep is None:
                self._unused = len(self._idle) - 1
                self._sweep = self._loop.call_later(KEEP_SECONDS, self._give_back_unused)
        else:
            assert self._pool is not None
            await self._pool.release(connection)

    def _give_back_unused(self) -> None:
        """Hand the kept connections no call took since the last sweep back to the pool."""
        self._sweep = None
        unused, self._idle = self._idle[: self._unused], self._idle[self._unused :]
        assert self._pool is not None
        for connection in unused:
            task = self._loop.create_task(self._pool.release(connection))
            self._running.add(task)  # a close waits for it
            task.add_done_callback(self._running.discard)
        self._unused = len(self._idle)
        if self._idle:
            self._sweep = self._loop.call_later(KEEP_SECONDS, self._give_back_unused)

    async def _run(
        self,
        plan: Plan[T],
        write: bool,
        fallback: Callable[[], Plan[T]] | None,
        future: concurrent.futures.Future[T],
    ) -> T:
        """Run ``plan`` for ``future``'s caller, who may withdraw it (cancel the future) until it
        has a connection: until then it has not started, however long the pool keeps it waiting."""
        try:
            async with _Borrowed(self) as connection:
                if not future.set_running_or_notify_cancel():
                    plan.close()
                    raise _Withdrawn
                return await run_on(connection, plan, self.trace, write=write, fallback=fallback)
        except Exception as exc:
            if self._ended_by_close(exc):
                raise StorageError("the store closed during the call") from exc
            raise

    def _ended_by_close(self, exc: BaseException) -> bool:
        """Whether ``exc`` is how a close ended a call: its cancellation, or, when the close ended
        a transaction, the driver's error on a closed connection, which asyncpg raises in place
        of the cancellation."""
        return not isinstance(exc, Exception) or (self._pool_closing and not isinstance(exc, ChatMemoryError))

    def _enqueue(
        self, group: Hashable, plan: Plan[Any], future: concurrent.futures.Future[Any], fallback: _Fallback
    ) -> None:
        queue = self._groups.get(group)
        if queue is None:
            queue = self._groups[group] = collections.deque()
            task = self._loop.create_task(self._commit_group(group, queue))
            self._committing.add(task)
            task.add_done_callback(self._committing.discard)
        queue.append((plan, future, fallback, time.monotonic() + LOCK_TIMEOUT_MS / 1000))

    async def _commit_group(self, group: Hashable, queue: collections.deque[_Queued]) -> None:
        """Run a group's writes: those that queued while its transaction was busy (waiting for
        the row lock they all need, or for its commit to reach the disk) share the next one,
        each in its own savepoint, in queue order. One that fails is rolled back to its
        savepoint and fails alone; the others are answered once their shared commit is done,
        and fail with it if it fails. A write whose caller gave up before it started is
        skipped. Every write of a group takes the same locks (its conversation's and history's
        rows, then the change clock's), in the order one alone takes them, so sharing a
        transaction adds no lock order that could deadlock with another process."""
        try:
            while queue:
                batch = []
                for _ in range(min(GROUP_MAX, len(queue))):
                    queued = queue.popleft()
                    if queued[1].cancelled():
                        queued[0].close()
                    else:
                        batch.append(queued)
                if batch:
                    await self._commit_batch(batch)
        finally:
            del self._groups[group]
            _fail_queued(queue)  # the store closed meanwhile (see ``_close_pool``)

    async def _commit_batch(self, batch: list[_Queued]) -> None:
        answered: list[tuple[concurrent.futures.Future[Any], Any]] = []
        try:
            async with _Borrowed(self) as connection:
                # Withdrawn while the pool kept them waiting: they never started.
                batch = [queued for queued in batch if _started(queued)]
                if not batch:
                    return
                # A write that waited in the queue (behind writes waiting for a lock) runs as
                # one of a batch, with the rest of its lock wait.
                if len(batch) == 1 and batch[0][3] - time.monotonic() > LOCK_TIMEOUT_MS / 1000 - _LATE:
                    plan, future, fallback, _ = batch[0]
                    answered.append(
                        (future, await run_on(connection, plan, self.trace, write=True, fallback=fallback))
                    )
                else:
                    answered = await _commit_together(connection, batch, self.trace, self._lock_waits)
        except BaseException as exc:
            failed = StorageError("the store closed during the write") if self._ended_by_close(exc) else exc
            for plan, future, *_ in batch:
                plan.close()
                _fail(future, failed)
            if not isinstance(exc, Exception):
                raise
            return
        for future, result in answered:
            future.set_result(result)

    def listen(self, channel: str, wake: Callable[[str], None]) -> None:
        """Keep one connection listening on ``channel``, calling ``wake`` with each notification's
        payload, and with ``""`` whenever it (re)connects, since notifications sent meanwhile are
        lost (idempotent)."""
        with self._lock:
            if not self._listen_asked and not self._closing:
                # Asked before any close begins, so started before the close runs (the loop runs
                # callbacks in the order they came), and the close ends it.
                self._listen_asked = True
                self._loop.call_soon_threadsafe(self._start_listening, channel, wake)

    def _start_listening(self, channel: str, wake: Callable[[str], None]) -> None:
        self._listening_task = self._loop.create_task(self._listen(channel, wake))

    async def _listen(self, channel: str, wake: Callable[[str], None]) -> None:
        while True:
            try:
                connection = await asyncpg.connect(**self._options)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(1)
                continue
            lost = asyncio.Event()
            try:
                connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
                await connection.add_listener(channel, lambda *args: wake(args[-1]))
                self.listening = True
                wake("")
                await lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            finally:
                self.listening = False
                connection.terminate()

    async def _close_pool(self) -> None:
        if self._listening_task is not None:
            self._listening_task.cancel()
            await asyncio.gather(self._listening_task, return_exceptions=True)
        # Calls handed over before the close (every other is refused) finish first, as appends
        # queued by then do: the loop runs them in the order they came, so all have started.
        running = self._running | self._committing
        if running:
            await asyncio.wait(running, timeout=CLOSE_TIMEOUT)
        self._pool_closing = True
        if self._sweep is not None:
            self._sweep.cancel()
        if self._pool is not None:
            kept, self._idle = self._idle, []
            for connection in kept:
                await self._pool.release(connection)
            if any(not task.done() for task in running):
                self._pool.terminate()
            else:
                try:
                    await asyncio.wait_for(self._pool.close(), timeout=CLOSE_TIMEOUT)
                except TimeoutError:
                    self._pool.terminate()
        # Any still left (waiting on a lock, or for a connection the pool will never hand out)
        # fail now, rather than wait forever on a loop that stops.
        left = [*self._running, *self._committing]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        for queue in self._groups.values():  # of a task cancelled before it started
            _fail_queued(queue)

    def close(self) -> None:
        """Refuse new calls, end the running ones (see ``_close_pool``), close the pool and stop
        the loop (blocking: run it on a thread; idempotent)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            closing = asyncio.run_coroutine_threadsafe(self._close_pool(), self._loop)
            closing.result(timeout=3 * CLOSE_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=3 * CLOSE_TIMEOUT)
        # The loop has stopped (or is stuck past every bound above): whatever it has not
        # answered by now, it never will.
        with self._lock:
            unanswered = list(self._unanswered)
        for future in unanswered:
            _refuse(future)
        if not self._thread.is_alive():
            self._loop.close()


class _Borrowed:
    """A connection for one call (``PostgresDriver._acquire``), given back as the call ends:
    kept for the next if it ended without an error (``PostgresDriver._release``)."""

    __slots__ = ("_connection", "_driver")

    def __init__(self, driver: PostgresDriver) -> None:
        self._driver = driver

    async def __aenter__(self) -> asyncpg.Connection:
        self._connection = await self._driver._acquire()
        return self._connection

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        await self._driver._release(self._connection, clean=kind is None)


def _alive(connection: asyncpg.Connection) -> bool:
    """False for a kept connection that closed meanwhile (the server ended it, say): asyncpg
    then gave it back to its pool, which connects it again when next asked (unless it closed
    without asyncpg's cleanup, see ``_acquire``)."""
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:
        return False


class _Withdrawn(Exception):
    """The caller withdrew its call before it started (see ``PostgresDriver._run``)."""


def _started(queued: _Queued) -> bool:
    """Mark a queued write started, now that it has a connection, unless its caller withdrew it."""
    if queued[1].set_running_or_notify_cancel():
        return True
    queued[0].close()
    return False


def _fail(future: concurrent.futures.Future[Any], exc: BaseException) -> None:
    """Answer ``future`` with ``exc``, unless it is answered or its caller withdrew it meanwhile."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_exception(exc)


async def _answer(future: concurrent.futures.Future[T], call: Coroutine[Any, Any, T]) -> None:
    """Run ``call`` on the driver's loop and answer its caller's ``future`` with the outcome; a
    call the closing store ended is answered with StorageError."""
    try:
        result = await call
    except _Withdrawn:
        pass
    except Exception as exc:
        _fail(future, exc)
    except BaseException:
        _fail(future, StorageError("the store closed during the call"))
        raise
    else:
        future.set_result(result)
