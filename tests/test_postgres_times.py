"""PostgreSQL timestamps through the codec the store sets on its connections
(``_postgres_driver.set_up``): each distinct value decoded once and then shared, and both ways
exactly what asyncpg's own codec does, except that 'infinity' and '-infinity' read as the
aware instants that write them."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from chatmemory import ChatMemory, NewMessage, Principal, StorageError
from chatmemory._db import create_engine
from chatmemory._postgres_driver import _TIMES_KEPT
from chatmemory.scope import Scope
from tests._postgres import _connect, create_database, end_other_connections, on_store_loop, store_backends

TEXTS = [
    "2000-01-01 00:00:00+00",
    "1999-12-31 23:59:59.999999+00",  # before the codec's epoch
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "2026-12-01 09:15:30.123456+05:30",
    "infinity",
    "-infinity",
    "2000-01-01 00:00:00+00",  # again: the same object as the first
]
DATETIMES = [
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(2026, 12, 1, 9, 15, 30, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 12, 1, 9, 15, 30, 123456),  # naive: local time, as asyncpg takes it
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # 'infinity' for asyncpg
    datetime.max,
    datetime.min,
]
# The first and last instants a store accepts, which asyncpg writes as '-infinity' and 'infinity'.
EDGES = [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
# More distinct values than the codec keeps, so its cache starts over in the middle of one read.
MANY = (
    "SELECT timestamptz '2000-01-01 UTC' + n * interval '1 second' "
    f"FROM generate_series(1, {_TIMES_KEPT + 100}) n"
)


async def _read(connection: Any) -> tuple[list[Any], list[str], list[Any]]:
    decoded = [r[0] for r in await connection.fetch("SELECT t::timestamptz FROM unnest($1::text[]) t", TEXTS)]
    encoded = [await connection.fetchval("SELECT $1::timestamptz::text", d) for d in DATETIMES]
    many = [r[0] for r in await connection.fetch(MANY)]
    return decoded, encoded, many


async def test_timestamps_read_and_written_as_asyncpg_reads_and_writes_them(postgres_url: str) -> None:
    url = await create_database(postgres_url)
    async with ChatMemory.open(url) as memory:
        await memory.scoped(Principal("a")).start_conversation()  # opens the store's pool

        async def through_the_store() -> tuple[list[Any], list[str], list[Any]]:
            async with memory._db._postgres._pool.acquire() as connection:
                await connection.execute("SET TIME ZONE 'Europe/Oslo'")  # text output, not decoding
                try:
                    return await _read(connection)
                finally:
                    await connection.execute("RESET TIME ZONE")

        ours = await on_store_loop(memory, through_the_store())
    plain = await _connect(url)
    try:
        await plain.execute("SET TIME ZONE 'Europe/Oslo'")
        theirs = await _read(plain)
    finally:
        await plain.close()
    # 'infinity' and '-infinity' read as the instants that write them, aware as every other time.
    assert theirs[0][5:7] == [datetime.max, datetime.min]
    assert ours[0] == theirs[0][:5] + EDGES[::-1] + theirs[0][7:]
    assert ours[1] == theirs[1]
    assert ours[2] == theirs[2]
    decoded, _, many = ours
    assert all(d.tzinfo is UTC for d in decoded + many)
    assert decoded[0] is decoded[-1]  # decoded once, then shared
    assert len(set(many)) == len(many)


async def test_a_time_beyond_python_s_years_fails_to_read_as_with_asyncpg_s_codec(postgres_url: str) -> None:
    url = await create_database(postgres_url)
    beyond = "SELECT timestamptz '10000-01-01 00:00:00+00'"  # PostgreSQL's years go on to 294276
    async with ChatMemory.open(url) as memory:
        await memory.scoped(Principal("a")).start_conversation()  # opens the store's pool

        async def through_the_store() -> Any:
            async with memory._db._postgres._pool.acquire() as connection:
                return await connection.fetchval(beyond)

        with pytest.raises(OverflowError):  # not 9999-12-31 23:59:59.999999, the 'infinity' above
            await on_store_loop(memory, through_the_store())
    plain = await _connect(url)
    try:
        with pytest.raises(OverflowError):
            await plain.fetchval(beyond)
    finally:
        await plain.close()


async def test_messages_stamped_at_the_first_and_last_instants_read_back_as_stamped(alice: Scope) -> None:
    conversation = await alice.start_conversation()
    history = await alice.start_history(conversation.id, model="m")
    for when in EDGES:
        (message,) = await alice.merge_and_append(
            {}, history_id=history.id, messages=[NewMessage("user", str(when))], created_at=when
        )
        assert message.created_at == when
        assert await alice.get_message(message.id) == message
    # An export of them imports again (a naive time read back would be refused).
    document = await alice.export_conversation(conversation.id)
    imported = await alice.import_conversation(document, new_ids=True)
    assert [m.created_at for m in await alice.transcript(imported.id)] == EDGES


async def test_connections_the_pool_opens_again_after_the_server_ended_them_read_through_the_codec(
    postgres_url: str,
) -> None:
    """Every connection of the store's pool is set up, not only those it opened first: after the
    server ended them, the last instant a store accepts still reads back aware (asyncpg's own
    codec reads 'infinity' as the naive ``datetime.max``)."""
    url = await create_database(postgres_url)
    async with ChatMemory.open(url, pool_size=1, max_overflow=0) as memory:
        alice = memory.scoped(Principal("alice"))
        conversation = await alice.start_conversation()
        history = await alice.start_history(conversation.id, model="m")
        (message,) = await alice.merge_and_append(
            {}, history_id=history.id, messages=[NewMessage("user", "last")], created_at=EDGES[1]
        )
        ours = store_backends(memory)
        assert len(ours) == 1 and ours <= await end_other_connections(url)
        # The pool may notice the dead connection only when a call uses it.
        with contextlib.suppress(StorageError):
            await alice.get_message(message.id)
        assert (await alice.get_message(message.id)).created_at == EDGES[1]


async def test_a_callers_asyncpg_engine_keeps_asyncpg_s_own_codec(postgres_url: str) -> None:
    """The codec is the store's own pool's: a caller's engine that the store runs calls on
    (``ChatMemory(engine)``) still reads times as asyncpg does, 'infinity' as the naive
    ``datetime.max``."""
    url = await create_database(postgres_url)
    async with ChatMemory.open(url):
        pass  # migrate
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with ChatMemory(engine) as memory:
            alice = memory.scoped(Principal("alice"))
            conversation = await alice.start_conversation()
            assert (await alice.get_conversation(conversation.id)).created_at.tzinfo is UTC
        async with engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert await raw.fetchval("SELECT 'infinity'::timestamptz") == datetime.max
    finally:
        await engine.dispose()
