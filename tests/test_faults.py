"""Faults: killed processes, errors inside a transaction, connections dropped by the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from sqlalchemy import make_url, text, update

from chatmemory import ChatMemory, NewMessage, Principal, StorageError
from chatmemory._db import _database_error
from chatmemory._schema import conversations
from chatmemory.scope import Scope
from tests._postgres import create_database, end_other_connections, on_store_loop, pool_idle, store_backends
from tests.test_postgres_group_commit import until

ROOT = Path(__file__).parent.parent
BATCH = 7

_APPENDER = (
    """
import asyncio, sys
from chatmemory import ChatMemory, Principal
async def main(url, history_id):
    async with ChatMemory.open(url, migrate=False) as memory:
        chat = memory.scoped(Principal("alice"))
        b = 0
        while True:
            batch = [{"role": "user", "content": f"{b}:{i}"} for i in range(%d)]
            await chat.append_messages(history_id, batch)
            b += 1
            if b == 5:
                print("writing", flush=True)
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
    % BATCH
)


async def test_sigkill_mid_appends_leaves_whole_batches(db_url: str, backend: str) -> None:
    async with ChatMemory.open(db_url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
    with subprocess.Popen(
        [sys.executable, "-c", _APPENDER, db_url, str(run.id)], cwd=ROOT, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"writing"
        await asyncio.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    async with ChatMemory.open(db_url) as memory:
        if backend == "sqlite":
            async with memory.engine.connect() as conn:
                assert (await conn.execute(text("PRAGMA integrity_check"))).scalar_one() == "ok"
                assert (await conn.execute(text("PRAGMA foreign_key_check"))).all() == []
        alice = memory.scoped(Principal("alice"))
        messages = await alice.transcript(conv.id)
        batches: dict[str, list[int]] = defaultdict(list)
        for m in messages:
            batches[m.content.split(":")[0]].append(m.seq)
        assert len(batches) >= 5
        assert all(len(seqs) == BATCH for seqs in batches.values())
        assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
        assert (await alice.get_conversation(conv.id)).message_count == len(messages)
        # The database still takes writes.
        await alice.append_messages(run.id, [NewMessage("user", "after")])


async def test_error_inside_the_transaction_leaves_nothing(alice: Scope, memory: ChatMemory) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", "before")])
    # Rewind the counter so the batch collides with the stored seq 1: the insert fails inside the transaction.
    async with memory.engine.begin() as conn:
        await conn.execute(update(conversations).where(conversations.c.id == conv.id).values(last_seq=0))
    with pytest.raises(StorageError):
        await alice.append_messages(run.id, [NewMessage("user", "a"), NewMessage("user", "b")])
    assert [m.content for m in await alice.transcript(conv.id)] == ["before"]
    summary = (await alice.list_conversations()).items[0]
    assert (summary.message_count, summary.last_message_preview) == (1, "before")


async def test_connection_terminated_by_postgres(postgres_url: str) -> None:
    from tests.conftest import _create_database

    url = await _create_database(postgres_url)
    async with ChatMemory.open(url, pool_size=1, max_overflow=0) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        ours = store_backends(memory)
        assert len(ours) == 1 and ours <= await end_other_connections(url)
        # The pool may notice the dead connection only when a call uses it.
        with contextlib.suppress(StorageError):
            await alice.get_conversation(conv.id)
        assert (await alice.get_conversation(conv.id)).id == conv.id


@pytest.mark.parametrize("command_timeout", [None, "45"], ids=["unset", "in the url"])
async def test_a_server_that_stops_answering_is_bounded_by_the_urls_command_timeout_alone(
    postgres_url: str, command_timeout: str | None
) -> None:
    """Nothing but asyncpg's ``command_timeout`` bounds a statement whose server stops answering
    (hung, or behind a network path that drops packets silently): the store's own connections
    run under the one the URL gives, and under none by default, since the store's own upkeep
    (indexing for search after a large import) may rightly run long."""
    url = await create_database(postgres_url)
    if command_timeout is not None:
        url = make_url(url).update_query_dict({"command_timeout": command_timeout}).render_as_string(False)
    async with ChatMemory.open(url, pool_size=3, max_overflow=0) as memory:
        alice = memory.scoped(Principal("alice"))
        await asyncio.gather(*(alice.start_conversation() for _ in range(6)))
        pool = memory._db._postgres._pool

        async def bounds() -> list[float | None]:
            return [h._con._config.command_timeout for h in pool._holders if h._con is not None]

        seen = await on_store_loop(memory, bounds())
    assert seen and set(seen) == {None if command_timeout is None else float(command_timeout)}


@asynccontextmanager
async def _one_kept(postgres_url: str) -> AsyncIterator[tuple[str, ChatMemory, Scope, UUID, Any]]:
    """A store on a new database with a pool of one connection, which the driver keeps after a
    call: the database's URL, the store, alice's scope, a conversation of hers and that kept
    connection."""
    from tests.conftest import _create_database

    url = await _create_database(postgres_url)
    async with ChatMemory.open(url, pool_size=1, max_overflow=0) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        driver = memory._db._postgres
        assert driver is not None and len(driver._idle) == 1
        yield url, memory, alice, conv.id, driver._idle[0]


async def test_a_kept_connection_the_server_ended_is_not_handed_out(postgres_url: str) -> None:
    """The driver keeps the connection a call gave back clean for the next call; once the
    server has ended it (and its client has seen the socket close), the next call connects
    again rather than fail on it."""
    async with _one_kept(postgres_url) as (url, memory, alice, conv_id, kept):
        await end_other_connections(url)

        async def closed() -> bool:
            try:
                return bool(kept.is_closed())
            except asyncpg.InterfaceError:  # given back to the pool as it closed
                return True

        for _ in range(3000):  # at most 30 s: the machine may be slow
            if await on_store_loop(memory, closed()):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the client never saw its connection end")
        assert (await alice.get_conversation(conv_id)).id == conv_id


async def test_a_kept_connection_closed_without_cleanup_goes_back_to_its_pool(postgres_url: str) -> None:
    """A kept connection whose protocol aborted (asyncpg closes it then without its cleanup,
    which would give it back to its pool) is given back by the driver: with a pool of one, the
    next call connects again rather than wait forever for a slot no one holds."""
    async with _one_kept(postgres_url) as (_, memory, alice, conv_id, kept):

        async def abort() -> bool:
            kept._con._protocol.abort()
            return bool(kept.is_closed())

        assert await on_store_loop(memory, abort())
        assert (await asyncio.wait_for(alice.get_conversation(conv_id), 30)).id == conv_id


_WRITE_AND_EXIT = """
import asyncio, sys
from chatmemory import ChatMemory, Principal
async def main(url):
    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(Principal("alice", tenant="t"))
        conv = await chat.start_conversation("durable", metadata={"k": [1, "ü"]})
        run = await chat.start_history(conv.id, model="m", system_prompts=["s"])
        await chat.append_messages(run.id, [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "url": "https://x/y.png"}]},
            {"role": "assistant", "content": "yo", "usage": {"t": 1}, "native": {"format": "f", "data": [1]}},
        ])
        await chat.finish_history(run.id, usage={"total": 3})
        print((await chat.get_conversation(conv.id, messages=True)).model_dump_json())
asyncio.run(main(sys.argv[1]))
"""


async def test_data_survives_process_exit(db_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WRITE_AND_EXIT, db_url], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    from chatmemory import ConversationDetail

    written = ConversationDetail.model_validate_json(out.stdout)
    async with ChatMemory.open(db_url, migrate=False) as memory:
        reread = await memory.scoped(Principal("alice", tenant="t")).get_conversation(
            written.id, messages=True
        )
    assert reread == written


async def test_kept_connections_no_call_takes_go_back_to_the_pool(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection kept for the next call that no call takes for a while goes back to the pool
    (whose own timer closes it), as the pool would have had it back at once; one in steady use
    stays kept."""
    from chatmemory import _postgres_driver
    from tests.conftest import _create_database

    monkeypatch.setattr(_postgres_driver, "KEEP_SECONDS", 0.2)
    async with ChatMemory.open(await _create_database(postgres_url)) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        driver = memory._db._postgres
        assert driver is not None
        # Sweeps counted, not timed: on a busy machine the driver's loop runs them late.
        sweeps, give_back = [0], driver._give_back_unused

        def counted() -> None:
            give_back()
            sweeps[0] += 1

        monkeypatch.setattr(driver, "_give_back_unused", counted)
        for _ in range(20):
            await asyncio.gather(*(chat.get_conversation(conv.id) for _ in range(4)))
            if len(driver._idle) > 1:
                break
        assert len(driver._idle) > 1
        swept = sweeps[0]
        for _ in range(600):  # one call at a time, for three sweeps
            await chat.get_conversation(conv.id)
            await asyncio.sleep(0.05)
            if sweeps[0] >= swept + 3:
                break
        else:
            raise AssertionError("the kept connections were never swept")
        assert len(driver._idle) == 1
        swept = sweeps[0]
        await until(lambda: sweeps[0] >= swept + 2 or not driver._idle, "two sweeps with no call between")
        await pool_idle(memory)
        assert driver._idle == []
        assert (await chat.get_conversation(conv.id)).id == conv.id


def test_a_driver_error_is_named_by_its_kind_and_first_line_of_text() -> None:
    """A driver's error with no text (asyncpg's connect timeout is a bare ``TimeoutError()``)
    reads ``database error: TimeoutError``, not a name followed by nothing."""
    assert _database_error(TimeoutError()) == "database error: TimeoutError"
    assert _database_error(OSError("\n  disk full\nmore")) == "database error: OSError: disk full"


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_sqlite_file_deleted_or_replaced_under_the_store_fails_its_calls(
    tmp_path: Path, how: str
) -> None:
    """Before: the store's open connections went on writing into the deleted file
    (acknowledged, then lost) while the ones it opened later read a new empty database, or
    the file put in its place. Every call now fails, naming what happened, and nothing is
    made at the path."""
    path = tmp_path / "chat.db"
    other = tmp_path / "other.db"
    async with ChatMemory.open(f"sqlite:///{other}") as elsewhere:
        await elsewhere.scoped(Principal("alice")).start_conversation(title="another database")
    memory = await ChatMemory.open(f"sqlite:///{path}")
    try:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation(title="mine")
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", "before")])
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")
        if how == "replaced":
            os.rename(other, path)
        await asyncio.sleep(0.01)  # past the store's look at the file (every millisecond at most)
        calls = {
            "a small append": lambda: alice.append_messages(run.id, [NewMessage("user", "after")]),
            "a large append": lambda: alice.append_messages(run.id, [NewMessage("user", "x" * 9000)] * 50),
            "a small read": lambda: alice.list_messages(history_id=run.id, limit=5),
            "a transcript": lambda: alice.transcript(conv.id),
            "a listing": lambda: alice.list_conversations(),
            "a search": lambda: alice.search_messages("after"),
        }
        outcomes: dict[str, str] = {}
        for name, call in calls.items():
            try:
                await call()
                outcomes[name] = "worked"
            except StorageError as exc:
                outcomes[name] = str(exc)
        assert all("was deleted or replaced while the store had it open" in o for o in outcomes.values()), (
            outcomes
        )
    finally:
        await memory.close()
    assert os.path.exists(path) is (how == "replaced")
