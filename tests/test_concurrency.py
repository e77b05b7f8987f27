"""Concurrent writers, tasks and processes: appends neither lost, duplicated nor interleaved, and of two
changes racing for one row, exactly one succeeds."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import make_url

from chatmemory import ChatMemory, ConflictError, HistoryNotFound, Message, MessageNotFound, Principal
from chatmemory.scope import Scope

ROOT = Path(__file__).parent.parent
BATCH = 5


def _check(messages: list[Message], writers: int, batches: int) -> None:
    assert [m.seq for m in messages] == list(range(1, writers * batches * BATCH + 1))
    contents = [m.content for m in messages]
    assert len(set(contents)) == len(contents)
    groups: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        writer, batch, i = m.content.split(":")
        groups[f"{writer}:{batch}"].append(m.seq)
        assert int(i) == len(groups[f"{writer}:{batch}"]) - 1
    assert len(groups) == writers * batches
    for seqs in groups.values():
        assert seqs == list(range(seqs[0], seqs[0] + BATCH)), "a batch was interleaved"


async def _writer(chat: Scope, history_id: object, writer: int, batches: int) -> None:
    for b in range(batches):
        batch = [{"role": "user", "content": f"w{writer}:{b}:{i}"} for i in range(BATCH)]
        await chat.append_messages(history_id, batch)  # type: ignore[arg-type]


async def test_sixteen_tasks_append_to_one_conversation(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await asyncio.gather(*(_writer(alice, run.id, w, 10) for w in range(16)))
    _check(await alice.transcript(conv.id), 16, 10)
    assert (await alice.get_conversation(conv.id)).message_count == 16 * 10 * BATCH


# Each process signals it is ready, then waits for the others, so the appends really overlap.
_PROCESS_WRITER = (
    """
import asyncio, pathlib, sys
import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import make_url

from chatmemory import ChatMemory, Principal
async def main(url, history_id, writer, batches, gate):
    async with ChatMemory.open(url, migrate=False) as memory:
        chat = memory.scoped(Principal("alice"))
        await chat.get_history(history_id)
        (pathlib.Path(gate) / f"ready-{writer}").touch()
        while not (pathlib.Path(gate) / "go").exists():
            await asyncio.sleep(0.01)
        for b in range(batches):
            batch = [{"role": "user", "content": f"p{writer}:{b}:{i}"} for i in range(%d)]
            await chat.append_messages(history_id, batch)
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
"""
    % BATCH
)


async def test_four_processes_append_to_one_conversation(db_url: str, tmp_path: Path) -> None:
    async with ChatMemory.open(db_url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _PROCESS_WRITER,
                db_url,
                str(run.id),
                str(w),
                "25",
                str(tmp_path),
                cwd=ROOT,
                stderr=subprocess.PIPE,
            )
            for w in range(4)
        ]
        async with asyncio.timeout(300):
            while len(list(tmp_path.glob("ready-*"))) < 4 and all(p.returncode is None for p in procs):
                await asyncio.sleep(0.05)
        (tmp_path / "go").touch()
        for proc in procs:
            _, err = await asyncio.wait_for(proc.communicate(), 300)
            assert proc.returncode == 0, err.decode()
        _check(await alice.transcript(conv.id), 4, 25)


async def _eight_at_once(chat: Scope, warm_id: object, call: Callable[[], Awaitable[object]]) -> list[object]:
    # Connections opened first, so the calls overlap rather than queue behind connecting.
    await asyncio.gather(*(chat.get_message(warm_id) for _ in range(8)))  # type: ignore[arg-type]
    return await asyncio.gather(*(call() for _ in range(8)), return_exceptions=True)


def _once(outcomes: list[object], refused: type[Exception]) -> None:
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1, outcomes
    assert all(isinstance(o, refused) for o in outcomes if isinstance(o, BaseException)), outcomes


async def test_concurrent_deletes_of_one_message_succeed_once(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    first, last = await alice.append_messages(run.id, [{"role": "user", "content": c} for c in ("a", "b")])
    _once(await _eight_at_once(alice, last.id, lambda: alice.delete_message(last.id)), MessageNotFound)
    assert (await alice.get_conversation(conv.id)).message_count == 1
    assert [m.id for m in await alice.transcript(conv.id)] == [first.id]


async def test_concurrent_deletes_of_one_history_succeed_once(alice: Scope) -> None:
    conv = await alice.start_conversation()
    kept = await alice.start_history(conv.id, model="m")
    run = await alice.start_history(conv.id, model="m")
    (message,) = await alice.append_messages(run.id, [{"role": "user", "content": "a"}])
    _once(await _eight_at_once(alice, message.id, lambda: alice.delete_history(run.id)), HistoryNotFound)
    assert [h.id for h in (await alice.get_conversation(conv.id)).histories] == [kept.id]


async def test_concurrent_finishes_of_one_history_succeed_once(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    (message,) = await alice.append_messages(run.id, [{"role": "user", "content": "a"}])
    outcomes = await _eight_at_once(alice, message.id, lambda: alice.finish_history(run.id, status="failed"))
    _once(outcomes, ConflictError)
    assert (await alice.get_history(run.id)).status == "failed"


async def test_concurrent_completions_of_one_message_succeed_once(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    (pending,) = await alice.append_messages(
        run.id, [{"role": "assistant", "content": "", "status": "pending"}]
    )
    outcomes = await _eight_at_once(
        alice, pending.id, lambda: alice.complete_message(pending.id, content="x")
    )
    _once(outcomes, ConflictError)
    stored = await alice.get_message(pending.id)
    assert (stored.status, stored.content) == ("complete", "x")


async def test_an_append_queued_behind_finish_history_is_refused(
    memory: ChatMemory, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another session holds the write lock while a finish, then an append, queue for it: once
    the finish is through, the append must see the history finished and add nothing."""
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database or "", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        # The store's one writer runs its writes in the order they came: the first waits for
        # the lock, the others queue behind it.
        driver, writes = memory._db._sqlite, [0]
        assert driver is not None
        submit = driver.submit

        def counted(plan: Any, *, write: bool) -> Any:
            writes[0] += write
            return submit(plan, write=write)

        monkeypatch.setattr(driver, "submit", counted)

        async def waiting() -> int:
            return writes[0]

        async def release() -> None:
            holder.execute("ROLLBACK")
            holder.close()

    else:
        waiting, release = await _postgres_lock(db_url, conv.id)

    async def queued(n: int, what: str) -> None:
        await _until_queued(waiting, n, what)

    finish = asyncio.ensure_future(alice.finish_history(run.id))
    await queued(1, "the finish")
    append = asyncio.ensure_future(alice.append_messages(run.id, [{"role": "user", "content": "late"}]))
    await queued(2, "the append, behind the finish")
    await release()
    finished, appended = await asyncio.gather(finish, append, return_exceptions=True)
    assert not isinstance(finished, BaseException), finished
    assert isinstance(appended, ConflictError), appended
    assert (await alice.get_history(run.id)).messages == []


async def _postgres_lock(
    db_url: str, conversation_id: object
) -> tuple[Callable[[], Awaitable[int]], Callable[[], Awaitable[None]]]:
    """Another session holding a conversation's row lock: how many sessions wait for a lock,
    and the lock's release."""
    url = make_url(db_url)
    conn = await asyncpg.connect(user=url.username, host=url.query.get("host") or url.host, port=url.port,
                                 database=url.database)  # fmt: skip
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute("SELECT 1 FROM chat_conversations WHERE id = $1 FOR UPDATE", conversation_id)

    async def waiting() -> int:
        # Inside a transaction, pg_stat_activity lists the sessions of its first look only.
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )

    async def release() -> None:
        await transaction.rollback()
        await conn.close()

    return waiting, release


async def _until_queued(waiting: Callable[[], Awaitable[int]], n: int, what: str) -> None:
    """Until ``n`` writes wait for the lock (at most 30 s: the machine may be slow)."""
    for _ in range(3000):
        if await waiting() >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not queued: {what}")


async def test_changes_of_one_history_queued_for_its_lock_each_answer_what_they_left(
    postgres_url: str,
) -> None:
    """Changes to one running history that wait for its conversation's lock meanwhile each keep
    what those before them set, and each answers the history as it left it: a finish queued
    behind two updates answers (and stores) both updates' values."""
    from tests.conftest import _create_database

    db_url = await _create_database(postgres_url)
    async with ChatMemory.open(db_url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m", metadata={"a": 1})
        waiting, release = await _postgres_lock(db_url, conv.id)
        try:
            model = asyncio.ensure_future(alice.update_history(run.id, model="n"))
            await _until_queued(waiting, 1, "the model's update")
            metadata = asyncio.ensure_future(alice.update_history(run.id, metadata={"b": [2, None]}))
            await _until_queued(waiting, 2, "the metadata's update")
            finish = asyncio.ensure_future(alice.finish_history(run.id, usage={"t": 3}))
            await _until_queued(waiting, 3, "the finish")
        finally:
            await release()
        answers = await asyncio.gather(model, metadata, finish)
        assert [(h.model, h.metadata, h.status) for h in answers] == [
            ("n", {"a": 1}, "running"),
            ("n", {"b": [2, None]}, "running"),
            ("n", {"b": [2, None]}, "completed"),
        ]
        stored = await alice.get_history(run.id, messages=False)
        assert stored.model_dump(exclude={"messages"}) == answers[-1].model_dump()


async def test_a_change_queued_behind_the_deletion_of_its_history_finds_no_history(postgres_url: str) -> None:
    """A finish, an update or a run's end that waits for the conversation's lock while the
    history is deleted finds no history, as it would have had it come after the deletion: it
    neither changes the deleted history nor logs a change of it after its deletion."""
    from tests.conftest import _create_database

    db_url = await _create_database(postgres_url)
    async with ChatMemory.open(db_url) as memory:
        alice = memory.scoped(Principal("alice"))
        changes = (
            lambda hid: alice.finish_history(hid),
            lambda hid: alice.update_history(hid, model="n"),
            lambda hid: alice.finish_run(hid),
        )
        for change in changes:
            conv = await alice.start_conversation()
            run = await alice.start_history(conv.id, model="m")
            start = await alice.change_cursor(conv.id)
            waiting, release = await _postgres_lock(db_url, conv.id)
            try:
                deletion = asyncio.ensure_future(alice.delete_history(run.id))
                await _until_queued(waiting, 1, "the deletion")
                changed = asyncio.ensure_future(change(run.id))
                await _until_queued(waiting, 2, "the change")
            finally:
                await release()
            deleted, refused = await asyncio.gather(deletion, changed, return_exceptions=True)
            assert deleted is None and isinstance(refused, HistoryNotFound), refused
            marker = await alice.start_history(conv.id, model="m")
            assert await asyncio.wait_for(_kinds_until(alice, conv.id, start, marker.id), 30) == [
                "history.deleted",
                "history.started",
            ]


async def _kinds_until(chat: Scope, conversation_id: object, after: str, history_id: object) -> list[str]:
    """The kinds of a conversation's changes after ``after``, up to the start of ``history_id``."""
    kinds = []
    async for event in chat.watch(conversation_id, after=after):  # type: ignore[arg-type]
        kinds.append(event.kind)
        if event.kind == "history.started" and event.history_id == history_id:
            return kinds
    raise AssertionError("the watch ended")


@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
async def test_concurrent_appends_all_succeed_whatever_the_databases_default_isolation(
    postgres_url: str, level: str
) -> None:
    """A DBA's ``ALTER DATABASE ... SET default_transaction_isolation``: the store's writes still
    run under READ COMMITTED, which they need. Before: most of 120 concurrent appends
    to one conversation failed with a serialization error."""
    from tests._postgres import _execute
    from tests.conftest import _create_database

    db_url = await _create_database(postgres_url)
    name = make_url(db_url).database
    await _execute(db_url, f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = '{level}'")
    async with ChatMemory.open(db_url, pool_size=6) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        runs = [await alice.start_history(conv.id, model="m") for _ in range(6)]
        await asyncio.gather(
            *(
                alice.append_messages(runs[i % 6].id, [{"role": "user", "content": f"m{i}"}])
                for i in range(120)
            )
        )
        assert (await alice.get_conversation(conv.id)).message_count == 120
