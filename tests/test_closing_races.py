"""A store closed while calls from other threads and event loops are on their way: every caller
is answered at once (a result, or StorageError), never left waiting.

Each race is forced rather than hoped for: a call is held between the store's closed check and
its hand-over to the driver (or a watcher before it asks for the change listener), and let go
at a chosen point of the driver's close; a call waits for a connection or a lock that the close
has to take away; a driver thread cannot open its connection. Every wait that a regression
could make endless is bounded (calls run on daemon threads), so a regression fails, not hangs.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from chatmemory import ChatMemory, NewMessage, Principal, StorageError, _postgres_driver
from chatmemory._postgres_driver import PostgresDriver
from chatmemory.scope import Scope
from tests._postgres import until_waiting_for_a_lock
from tests.conftest import _create_database
from tests.test_postgres_group_commit import _plain, _row_held, until
from tests.test_watch import WAIT
from tests.transactions import writer_busy

# A refusal is prompt when it comes well inside the bound that would mean a hang.
PROMPT = 5.0


class _Apart:
    """``call`` run on an event loop of its own, in a thread of its own (as a framework's thread
    pool does). The thread is a daemon: a call that never returns fails the test, and leaves
    nothing the test run must wait for."""

    def __init__(self, call: Callable[[], Awaitable[Any]]) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Awaitable[Any]]) -> None:
        async def go() -> Any:
            try:
                return await call()
            except StorageError as exc:
                return exc

        self._outcome.append(asyncio.run(go()))

    async def outcome(self) -> Any:
        """What the call returned, or the StorageError it raised."""
        await asyncio.to_thread(self._thread.join, WAIT)
        assert self._outcome, "the call never returned"
        return self._outcome[0]


def _callers(chat: Scope, conversation_id: Any, history_id: Any, cursor: str) -> dict[str, Any]:
    async def watch() -> Any:
        return await anext(chat.watch(conversation_id, after=cursor))

    return {
        "read": lambda: chat.get_history(history_id, messages=False),
        "write": lambda: chat.update_conversation(conversation_id, title="late"),
        "append": lambda: chat.append_messages(history_id, [NewMessage("user", "late")]),
        "watch": watch,
    }


@pytest.mark.parametrize("kind", ["read", "write", "append", "watch"])
async def test_a_call_that_reaches_the_driver_as_it_closes_is_refused_at_once(
    memory: ChatMemory, alice: Scope, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call from another thread's event loop that passed the closed check before the close
    began reaches the driver only once it has stopped (PostgreSQL: its loop stopped, not yet
    closed; SQLite: its threads shut down): it is refused with StorageError at once."""
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    cursor = await alice.change_cursor(conv.id)
    call = _callers(alice, conv.id, run.id, cursor)[kind]
    db = memory._db
    driver: Any = db._postgres if db._postgres is not None else db._sqlite
    entered, released, submitted = threading.Event(), threading.Event(), threading.Event()
    # Where a call reaches the driver: on SQLite, a small call first tries to run on its own
    # thread (a watch's read of changes is not small).
    entry = "run_here" if db._sqlite is not None and kind != "watch" else "submit"
    handing_over = getattr(driver, entry)

    def held_submit(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        released.wait(WAIT)
        try:
            return handing_over(*args, **kwargs)
        finally:
            submitted.set()

    # The point of the close where the held call goes on, the close waiting for its hand-over.
    stopping, step = (driver._thread, "join") if db._postgres is not None else (driver._readers, "shutdown")
    stop = getattr(stopping, step)

    def stop_then_let_the_call_in(*args: Any, **kwargs: Any) -> Any:
        result = stop(*args, **kwargs)
        released.set()
        submitted.wait(WAIT)
        return result

    monkeypatch.setattr(driver, entry, held_submit)
    monkeypatch.setattr(stopping, step, stop_then_let_the_call_in)
    loop = asyncio.get_running_loop()
    there = _Apart(call)
    assert await asyncio.to_thread(entered.wait, WAIT)
    begun = loop.time()
    await asyncio.wait_for(memory.close(), WAIT)
    outcome = await there.outcome()
    assert submitted.is_set()
    assert isinstance(outcome, StorageError) and "closed" in str(outcome), outcome
    assert loop.time() - begun < PROMPT


async def test_a_watcher_subscribing_as_the_store_closes_starts_no_listener(postgres_url: str) -> None:
    """PostgreSQL: a watch from another thread's event loop that asks for the change listener
    only once the store's loop has stopped ends with StorageError, and leaves nothing behind on
    that loop (no listener started, none left unstarted)."""
    memory = await ChatMemory.open(await _create_database(postgres_url))
    chat = memory.scoped(Principal("alice"))
    cursor = await chat.change_cursor()
    driver = memory._db._postgres
    assert isinstance(driver, PostgresDriver)
    entered, released, listened = threading.Event(), threading.Event(), threading.Event()
    listen, join = driver.listen, driver._thread.join

    def held_listen(*args: Any) -> None:
        entered.set()
        released.wait(WAIT)
        try:
            listen(*args)
        finally:
            listened.set()

    def join_then_let_the_watcher_listen(timeout: float | None = None) -> None:
        join(timeout)
        released.set()
        listened.wait(WAIT)

    driver.listen = held_listen  # type: ignore[method-assign]
    driver._thread.join = join_then_let_the_watcher_listen  # type: ignore[method-assign]

    async def watch() -> Any:
        return await anext(chat.watch(after=cursor))

    watcher = _Apart(watch)
    assert await asyncio.to_thread(entered.wait, WAIT)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        await asyncio.wait_for(memory.close(), WAIT)
    assert listened.is_set()
    outcome = await watcher.outcome()
    assert isinstance(outcome, StorageError) and "closed" in str(outcome), outcome
    assert [str(w.message) for w in seen if "never awaited" in str(w.message)] == []
    assert driver._loop.is_closed()


async def test_calls_waiting_for_a_connection_or_a_lock_when_the_store_closes_fail_at_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, one connection in the pool: a write waits on a row another connection
    holds, a read waits for the pool's only connection. Closing waits ``CLOSE_TIMEOUT`` for them,
    then ends both: each caller gets StorageError, and nothing is left running on the store's
    loop."""
    monkeypatch.setattr(_postgres_driver, "CLOSE_TIMEOUT", 0.2)
    url = await _create_database(postgres_url)
    memory = await ChatMemory.open(url, pool_size=1)
    chat = memory.scoped(Principal("alice"))
    conv = await chat.start_conversation()
    driver = memory._db._postgres
    assert isinstance(driver, PostgresDriver)
    loop = asyncio.get_running_loop()
    async with _row_held(url, conv.id) as blocker:
        write = _Apart(lambda: chat.update_conversation(conv.id, title="t"))
        for _ in range(3000):
            waiting = await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the write never waited on the row")
        read = _Apart(lambda: chat.get_conversation(conv.id))
        await until(lambda: len(asyncio.all_tasks(driver._loop)) == 2, "the read waiting for the connection")
        begun = loop.time()
        await asyncio.wait_for(memory.close(), WAIT)
        outcomes = [await write.outcome(), await read.outcome()]
    assert all(isinstance(outcome, StorageError) for outcome in outcomes), outcomes
    assert loop.time() - begun < PROMPT
    assert driver._loop.is_closed()


async def test_queued_sqlite_writes_whose_connection_cannot_open_fail_at_once(tmp_path: Path) -> None:
    """Writes queued together on SQLite are answered with StorageError when the writer thread
    cannot open its connection (the database file was replaced by a directory, which the store
    finds before it tries)."""
    path = tmp_path / "chat.db"
    url = f"sqlite:///{path}"
    async with ChatMemory.open(url) as first:
        chat = first.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        run = await chat.start_history(conv.id, model="m")
    # A new store: its writer thread opens its connection on its first write.
    memory = await ChatMemory.open(url)
    try:
        chat = memory.scoped(Principal("alice"))
        driver = memory._db._sqlite
        assert driver is not None
        gate = threading.Event()
        blocked = writer_busy(driver, gate)
        calls = [
            _Apart(lambda text=text: chat.append_messages(run.id, [NewMessage("user", text)]))
            for text in ("one", "two")
        ]
        await until(lambda: len(driver._queued) == 2, "both appends queued behind the blocked writer")
        path.rename(tmp_path / "moved.db")
        path.mkdir()
        gate.set()
        await asyncio.wait_for(blocked, WAIT)
        results = [await call.outcome() for call in calls]
        assert all(isinstance(r, StorageError) and "was deleted or replaced" in str(r) for r in results), (
            results
        )
    finally:
        gate.set()
        if path.is_dir():
            path.rmdir()
            (tmp_path / "moved.db").rename(path)
        await asyncio.wait_for(memory.close(), WAIT)


_READS: dict[str, Callable[[Scope, Any], Awaitable[Any]]] = {
    "transcript": lambda chat, cid: chat.transcript(cid),
    "conversation_with_messages": lambda chat, cid: chat.get_conversation(cid, messages=True),
}


@pytest.mark.parametrize("read_name", list(_READS))
async def test_a_read_waiting_on_a_lock_when_the_store_closes_says_the_store_closed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, read_name: str
) -> None:
    """A read waiting for a lock when its store closes is answered as any call the close ends
    ("the store closed during the call"), also one inside a transaction of its own (a
    conversation with its messages, in one snapshot), which the close ends with the
    connection: asyncpg then raises its own error about the transaction's exit."""
    monkeypatch.setattr(_postgres_driver, "CLOSE_TIMEOUT", 0.2)
    url = await _create_database(postgres_url)
    memory = await ChatMemory.open(url)
    chat = memory.scoped(Principal("alice"))
    conv = await chat.start_conversation()
    run = await chat.start_history(conv.id, model="m")
    await chat.append_messages(run.id, [{"role": "user", "content": "x"}])
    driver = memory._db._postgres
    blocker = await asyncpg.connect(_plain(url))
    holding = blocker.transaction()
    await holding.start()
    # Every read of the messages waits, after the read's first statements ran.
    await blocker.execute("LOCK TABLE chat_messages IN ACCESS EXCLUSIVE MODE")
    try:
        read = _Apart(lambda: _READS[read_name](chat, conv.id))
        await until_waiting_for_a_lock(url)
        begun = asyncio.get_running_loop().time()
        await asyncio.wait_for(memory.close(), 30)
        outcome = await read.outcome()
    finally:
        await holding.rollback()
        await blocker.close()
    assert asyncio.get_running_loop().time() - begun < PROMPT
    assert driver._loop.is_closed()
    assert isinstance(outcome, StorageError), outcome
    assert str(outcome) == "the store closed during the call"
