"""PostgreSQL group commit of appends to one history: queued appends share one COMMIT in queue
order, and at its edges: a statement of one append failing inside the shared transaction, the
shared COMMIT failing, two queued appends of one key, and the store closed while appends queue.
Appends are made to queue by holding their conversation's row lock from another connection, as
a concurrent writer would."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from chatmemory import (
    ChatMemory,
    History,
    HistoryNotFound,
    Message,
    Principal,
    StorageError,
    _postgres_driver,
)
from chatmemory.scope import Scope
from tests._postgres import log_queries, pool_idle
from tests.conftest import _create_database


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg", "postgresql")


@asynccontextmanager
async def _row_held(url: str, conversation_id: Any) -> AsyncIterator[asyncpg.Connection]:
    """Another connection holding the conversation's row until the block ends."""
    blocker = await asyncpg.connect(_plain(url))
    holding = blocker.transaction()
    await holding.start()
    await blocker.execute("SELECT 1 FROM chat_conversations WHERE id = $1 FOR UPDATE", conversation_id)
    try:
        yield blocker
    finally:
        await holding.rollback()
        await blocker.close()


_LOCK_WAIT = re.compile(r"; SET LOCAL lock_timeout = \d+$")


def _command(query: str) -> str:
    """A savepoint command as sent, without the lock wait set with it; another statement's first word."""
    if query.split()[0] in ("RELEASE", "ROLLBACK", "SAVEPOINT"):
        return _LOCK_WAIT.sub("", query)
    return query.split()[0]


async def until(done: Callable[[], bool], what: str) -> None:
    """Wait (at most 30 s) until ``done()``; the machine may be slow, the order must not be."""
    for _ in range(3000):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not reached: {what}")


def queue_of(chat: Any, history_id: Any) -> Any:
    """The appends of a history queued behind its running transaction (None: no transaction)."""
    return chat._db._postgres._groups.get(history_id)


async def _queued(chat: Any, history_id: Any, messages: list[dict[str, Any]]) -> list[asyncio.Future[Any]]:
    """Start an append of each message; the first waits on the held row, the rest queue behind it."""
    calls = []
    for message in messages:
        calls.append(asyncio.ensure_future(chat.append_messages(history_id, [message])))
        waiting = len(calls) - 1
        await until(
            lambda waiting=waiting: (
                (queue := queue_of(chat, history_id)) is not None and len(queue) == waiting
            ),
            f"{waiting} appends queued behind the first",
        )
    return calls


_ONE_REFUSED = [{"role": "user", "content": text} for text in ("one", "two", "refused", "three")]


async def _history(postgres_url: str) -> tuple[str, ChatMemory, Scope, History]:
    """A new database's URL, a store open on it, alice's scope and a running history of hers."""
    url = await _create_database(postgres_url)
    memory = await ChatMemory.open(url)
    chat = memory.scoped(Principal("alice"))
    conv = await chat.start_conversation()
    return url, memory, chat, await chat.start_history(conv.id, model="m")


async def _execute(url: str, statements: str) -> None:
    """Run SQL on a connection of its own (a trigger the test needs)."""
    setup = await asyncpg.connect(_plain(url))
    try:
        await setup.execute(statements)
    finally:
        await setup.close()


async def _sleeping(url: str) -> bool:
    """Whether a statement of the database is sleeping (in a trigger's ``pg_sleep``)."""
    admin = await asyncpg.connect(_plain(url))
    try:
        return bool(
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                "AND datname = current_database()"
            )
        )
    finally:
        await admin.close()


async def _refusing(url: str, *, at_commit: bool = False, slow: bool = False) -> None:
    """A trigger that refuses a message whose content is 'refused': as it is inserted ('refused
    row'), or with ``at_commit`` when its transaction commits ('refused late'); with ``slow``, a
    message 'slow' takes 3 s to insert."""
    reason = "refused late" if at_commit else "refused row"
    sleep = "IF NEW.content = 'slow' THEN PERFORM pg_sleep(3); END IF; " if slow else ""
    when = (
        "CONSTRAINT TRIGGER refuse AFTER INSERT ON chat_messages DEFERRABLE INITIALLY DEFERRED "
        if at_commit
        else "TRIGGER refuse BEFORE INSERT ON chat_messages "
    )
    await _execute(
        url,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.content = 'refused' THEN RAISE EXCEPTION '{reason}'; END IF; {sleep}RETURN NEW; END $$; "
        f"CREATE {when}FOR EACH ROW EXECUTE FUNCTION refuse()",
    )


@pytest.mark.parametrize("refused_at", [2, 3], ids=["between", "last"])
async def test_a_failing_statement_rolls_back_only_its_own_append(postgres_url: str, refused_at: int) -> None:
    """A PostgreSQL error in one queued append's statement (a trigger refusing its row) fails
    that append alone; the others of its transaction are committed, in order. The last append
    failing is rolled back to its savepoint before the COMMIT: a COMMIT of a transaction in
    error would roll back every append of it, with no error to tell their callers."""
    texts = ["one", "two", "three"]
    texts.insert(refused_at, "refused")
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        await _refusing(url)
        async with _row_held(url, run.conversation_id):
            calls = await _queued(chat, run.id, [{"role": "user", "content": text} for text in texts])
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        refused = results[refused_at]
        assert isinstance(refused, StorageError) and "refused row" in str(refused)
        assert [r[0].seq for r in results if isinstance(r, list)] == [1, 2, 3]
        assert [m.content for m in await chat.transcript(run.conversation_id)] == ["one", "two", "three"]
        summary = await chat.get_conversation(run.conversation_id)
        assert summary.message_count == 3 and summary.last_message_preview == "three"


async def test_a_failing_commit_fails_every_append_it_held(postgres_url: str) -> None:
    """When the shared COMMIT fails (a deferred check refusing one row), no append of that
    transaction is answered as stored, and none is."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        await _refusing(url, at_commit=True)
        async with _row_held(url, run.conversation_id):
            calls = await _queued(chat, run.id, _ONE_REFUSED)
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        assert isinstance(results[0], list)  # alone in its transaction
        assert all(isinstance(r, StorageError) and "refused late" in str(r) for r in results[1:])
        assert [m.content for m in await chat.transcript(run.conversation_id)] == ["one"]
        assert (await chat.get_conversation(run.conversation_id)).message_count == 1


async def test_queued_appends_of_one_key_store_it_once(postgres_url: str) -> None:
    """Two appends of one key that share a transaction store the message once, and both are
    answered with it."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        async with _row_held(url, run.conversation_id):
            calls = await _queued(
                chat,
                run.id,
                [
                    {"role": "user", "content": "first", "key": "a"},
                    {"role": "user", "content": "keyed", "key": "k"},
                    {"role": "user", "content": "keyed again", "key": "k"},
                    {"role": "user", "content": "last"},
                ],
            )
        results: list[list[Message]] = await asyncio.wait_for(asyncio.gather(*calls), 30)
        assert results[1] == results[2] and results[2][0].content == "keyed"
        assert [m.content for m in await chat.transcript(run.conversation_id)] == ["first", "keyed", "last"]
        assert [r[0].seq for r in results] == [1, 2, 2, 3]


async def test_keyed_appends_are_not_sent_at_once_right_after_some_met_a_stored_key(
    postgres_url: str,
) -> None:
    """Callers sending again what was stored (an idempotent retry) make a group sent at once
    fail and run again one savepoint each; for a second after, groups with keys go one
    savepoint each at once, while groups without keys are still sent at once."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        queries = await log_queries(memory)

        async def group(messages: list[dict[str, Any]]) -> list[str]:
            queries.clear()
            async with _row_held(url, run.conversation_id):
                calls = await _queued(chat, run.id, [{"role": "user", "content": "first"}, *messages])
            await asyncio.wait_for(asyncio.gather(*calls), 30)
            await pool_idle(memory)
            return list(queries)

        def started(sent: list[str]) -> list[str]:  # what began each transaction, or savepoint
            return [_LOCK_WAIT.sub("", q) for q in sent if q.startswith(("BEGIN", "SAVEPOINT"))]

        retried = await group([{"role": "user", "content": "k", "key": "k"}] * 2)
        assert "ROLLBACK" in retried and started(retried) == ["BEGIN", "BEGIN;", "SAVEPOINT plan"], retried
        keyed = await group([{"role": "user", "content": t, "key": t} for t in ("k2", "k3")])
        assert "ROLLBACK" not in keyed and started(keyed) == ["BEGIN;", "SAVEPOINT plan"], keyed
        plain = await group([{"role": "user", "content": t} for t in ("a", "b")])
        assert "ROLLBACK" not in plain and started(plain) == ["BEGIN"], plain
        contents = [m.content for m in await chat.transcript(run.conversation_id)]
        assert contents == ["first", "k", "first", "k2", "k3", "first", "a", "b"]


async def test_closing_the_store_while_appends_queue_answers_every_caller(postgres_url: str) -> None:
    """Closing the store while appends to one history wait and queue behind each other answers
    every caller: each is stored and answered, or fails with StorageError and is not stored."""
    url, memory, chat, run = await _history(postgres_url)
    async with _row_held(url, run.conversation_id):
        calls = await _queued(chat, run.id, [{"role": "user", "content": f"m{i}"} for i in range(6)])
        closing = asyncio.ensure_future(memory.close())
        await until(lambda: memory._db._postgres._closing, "the store's driver closing")
    await asyncio.wait_for(closing, 60)
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
    assert all(isinstance(r, list | StorageError) for r in results), results
    answered = [r[0].content for r in results if isinstance(r, list)]
    async with ChatMemory.open(url) as reopened:
        stored = [
            m.content for m in await reopened.scoped(Principal("alice")).transcript(run.conversation_id)
        ]
    assert stored == answered
    assert answered == [f"m{i}" for i in range(6)]  # as on SQLite, queued writes finish before the close


async def test_a_caller_cancelled_while_its_transaction_runs_waits_for_its_commit(postgres_url: str) -> None:
    """A caller cancelled once its queued append was taken into a transaction waits for that
    transaction's end, then is cancelled; the append is stored with the others."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        async with _row_held(url, run.conversation_id):
            calls = await _queued(chat, run.id, [{"role": "user", "content": t} for t in ("one", "two")])
            calls[0].cancel()
            await asyncio.sleep(0.2)
            assert not calls[0].done()  # its transaction still waits on the row
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        assert isinstance(results[0], asyncio.CancelledError) and isinstance(results[1], list)
        assert [m.content for m in await chat.transcript(run.conversation_id)] == ["one", "two"]


async def test_a_connection_lost_mid_transaction_fails_every_append_of_it(postgres_url: str) -> None:
    """When the connection of a shared transaction is lost after one append of it ran, every
    append of it fails with StorageError and none is stored; the next append gets a new one."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        admin = await asyncpg.connect(_plain(url))
        await admin.execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.content = 'slow' THEN PERFORM pg_sleep(30); END IF; RETURN NEW; END $$; "
            "CREATE TRIGGER slow BEFORE INSERT ON chat_messages FOR EACH ROW EXECUTE FUNCTION slow()"
        )
        async with _row_held(url, run.conversation_id):
            texts = ("one", "two", "slow")
            calls = await _queued(chat, run.id, [{"role": "user", "content": t} for t in texts])
        for _ in range(600):  # "two" ran in the shared transaction; "slow" sleeps in its trigger
            if await admin.fetchval(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                "AND datname = current_database()"
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the shared transaction never reached the slow append")
        await admin.close()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        assert isinstance(results[0], list)
        assert all(isinstance(r, StorageError) for r in results[1:]), results
        await chat.append_messages(run.id, [{"role": "user", "content": "three"}])
        assert [m.content for m in await chat.transcript(run.conversation_id)] == ["one", "three"]


def _sent_at_once_then_one_by_one(queries: list[str]) -> list[str]:
    """The queries of a shared transaction whose appends were first sent at once, one round
    trip for all (``_postgres_driver._pipelined``), and rolled back since one failed, then run
    again one savepoint each: those of the second transaction."""
    tried = queries.index("ROLLBACK")
    assert [_LOCK_WAIT.sub("", q).split()[0] for q in queries[tried - 2 : tried + 1]] == [
        "BEGIN",
        "WITH",
        "ROLLBACK",
    ], queries
    assert _LOCK_WAIT.search(queries[tried - 2]) is not None  # with BEGIN, in its round trip
    again = queries.index("BEGIN;", tried)
    assert queries.count("COMMIT;") == 1 and "COMMIT" not in queries, queries
    return queries[again : queries.index("COMMIT;") + 1]


async def test_queued_appends_are_sent_at_once_and_commit_together_in_order(postgres_url: str) -> None:
    """Appends to one history queued behind its running transaction share the next one, their
    statements sent in one round trip: ``BEGIN`` with the lock wait, the statements, ``COMMIT``,
    however many they are. Stored in queue order, each answered with its own messages."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        queries = await log_queries(memory)
        texts = ["one", "two", "three", "four", "five"]
        async with _row_held(url, run.conversation_id):
            calls = await _queued(chat, run.id, [{"role": "user", "content": t} for t in texts])
            queries.clear()
        results = await asyncio.wait_for(asyncio.gather(*calls), 30)
        await pool_idle(memory)
        sent = list(queries)
        assert [(r[0].seq, r[0].content) for r in results] == list(enumerate(texts, start=1))
        assert [m.content for m in await chat.transcript(run.conversation_id)] == texts
        summary = await chat.get_conversation(run.conversation_id)
        assert summary.message_count == 5 and summary.last_message_preview == "five"
    # The first append is its own statement's transaction; the four queued behind it share one.
    assert [_LOCK_WAIT.sub("", q) if q.startswith("BEGIN") else q.split()[0] for q in sent] == [
        "WITH",
        "BEGIN",
        "WITH",
        "COMMIT",
    ], sent


async def test_appends_sent_at_once_to_a_history_finished_meanwhile_each_fail_alone(
    postgres_url: str,
) -> None:
    """Appends sent at once whose statements find their history finished (by another writer
    while they queued) each fail with ConflictError and write nothing; an append of another
    history queued meanwhile is stored."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        other = await chat.start_history(run.conversation_id, model="m")
        blocker = await asyncpg.connect(_plain(url))
        try:
            holding = blocker.transaction()
            await holding.start()
            await blocker.execute(
                "SELECT 1 FROM chat_conversations WHERE id = $1 FOR UPDATE", run.conversation_id
            )
            calls = await _queued(chat, run.id, [{"role": "user", "content": t} for t in ("a", "b", "c")])
            await blocker.execute(
                "UPDATE chat_histories SET status = 'completed', finished_at = now() WHERE id = $1", run.id
            )
            elsewhere = asyncio.ensure_future(
                chat.append_messages(other.id, [{"role": "user", "content": "d"}])
            )
            await holding.commit()
        finally:
            await blocker.close()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        assert [type(r).__name__ for r in results] == ["ConflictError"] * 3, results
        assert [m.content for m in await asyncio.wait_for(elsewhere, 30)] == ["d"]
        assert [m.content for m in await chat.transcript(run.conversation_id)] == ["d"]
        assert (await chat.get_conversation(run.conversation_id)).message_count == 1


async def test_queued_appends_commit_together_in_order_and_fail_alone(postgres_url: str) -> None:
    """Appends to one history that queue while its transaction waits share the next one (one
    COMMIT), in queue order; one that fails (another principal's) fails alone and leaves
    nothing; one whose caller gave up before it started is not written."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        conv_id = run.conversation_id
        await chat.append_messages(run.id, [{"role": "user", "content": "zero"}])
        queries = await log_queries(memory)

        async def append(scope: Any, text: str) -> list[Message]:
            return await scope.append_messages(run.id, [{"role": "user", "content": text}])

        async with _row_held(url, conv_id):
            first = asyncio.ensure_future(append(chat, "one"))
            await until(lambda: queue_of(chat, run.id) is not None, "the first append running")
            calls = [
                asyncio.ensure_future(append(scope, text))
                for scope, text in [
                    (chat, "two"),
                    (chat, "withdrawn"),
                    (memory.scoped(Principal("bob")), "foreign"),
                    (chat, "three"),
                ]
            ]
            await until(lambda: len(queue_of(chat, run.id)) == 4, "four appends queued behind the first")
            calls[1].cancel()
            await until(calls[1].done, "the cancelled caller gone")
            queries.clear()
        results = await asyncio.gather(first, *calls, return_exceptions=True)
        await asyncio.sleep(0.05)
        assert isinstance(results[2], asyncio.CancelledError)
        assert isinstance(results[3], HistoryNotFound)
        assert [m.content for m in await chat.transcript(conv_id)] == ["zero", "one", "two", "three"]
        assert [r[0].seq for r in (results[0], results[1], results[4]) if isinstance(r, list)] == [2, 3, 4]
        summary = await chat.get_conversation(conv_id)
        assert summary.message_count == 4 and summary.last_message_preview == "three"
    # The first append is its one statement's own transaction; the three queued behind it are
    # sent at once, and since the foreign one's statement answers no row, rolled back and run
    # again in one transaction, each in a savepoint.
    shared = _sent_at_once_then_one_by_one(queries)
    # One round trip between two: the one before ended (released, or rolled back to for the
    # refused one) and the next started.
    # Each gets what is left of its own lock wait, in the same round trip as its savepoint.
    assert [_LOCK_WAIT.search(q) is not None for q in shared if q.split()[0] != "WITH"] == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert [_command(q) for q in shared] == [
        "BEGIN;",
        "SAVEPOINT plan",
        "WITH",
        "RELEASE SAVEPOINT plan; SAVEPOINT plan",
        "WITH",
        "ROLLBACK TO SAVEPOINT plan",
        "WITH",
        "COMMIT;",
    ]


async def test_failures_of_every_kind_in_one_transaction_each_roll_back_only_their_own(
    postgres_url: str,
) -> None:
    """In one shared transaction: the first append failing in PostgreSQL, the next failing in
    the store (another principal's, HistoryNotFound) right after, one stored, a keyed append
    whose one statement meets a key already stored (``KeyTaken``), a keyed one stored, and the
    last failing in the store. Each failed one is rolled back to its savepoint, the last before
    the COMMIT; the others are stored in order, and the connection goes on clean to the next
    call. The keyed append that met a stored key runs again at once in its savepoint, as the
    plan that looks its keys up under the lock, and fails on its last statement after the two
    that ran."""
    url, memory, chat, run = await _history(postgres_url)
    async with memory:
        await _refusing(url)
        bob = memory.scoped(Principal("bob"))
        stored = await chat.append_messages(run.id, [{"role": "user", "content": "stored", "key": "k0"}])
        appends = [
            (chat, [{"role": "user", "content": "zero"}]),
            (chat, [{"role": "user", "content": "refused"}]),
            (bob, [{"role": "user", "content": "foreign"}]),
            (chat, [{"role": "user", "content": "one"}]),
            (
                chat,
                [
                    {"role": "user", "content": "again", "key": "k0"},
                    {"role": "user", "content": "refused", "key": "k"},
                ],
            ),
            (chat, [{"role": "user", "content": "two", "key": "k2"}]),
            (bob, [{"role": "user", "content": "foreign"}]),
        ]
        queries = await log_queries(memory)
        async with _row_held(url, run.conversation_id):
            calls = []
            for scope, batch in appends:
                calls.append(asyncio.ensure_future(scope.append_messages(run.id, batch)))
                waiting = len(calls) - 1
                await until(
                    lambda waiting=waiting: (
                        (queue := queue_of(chat, run.id)) is not None and len(queue) == waiting
                    ),
                    f"{waiting} appends queued behind the first",
                )
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        assert [type(r).__name__ for r in results] == [
            "list",
            "StorageError",
            "HistoryNotFound",
            "list",
            "StorageError",
            "list",
            "HistoryNotFound",
        ], results
        assert all("refused row" in str(results[i]) for i in (1, 4))
        assert [r[0].seq for r in results if isinstance(r, list)] == [2, 3, 4]
        await pool_idle(memory)
        shared = _sent_at_once_then_one_by_one(queries)
        after = queries[queries.index("COMMIT;") + 1 :]
        driver = memory._db._postgres
        assert driver is not None
        assert driver._pool is not None
        connections = [holder._con for holder in driver._pool._holders if holder._con is not None]
        assert connections and not any(c.is_in_transaction() for c in connections)
        transcript = await chat.transcript(run.conversation_id)
        assert [m.content for m in transcript] == ["stored", "zero", "one", "two"]
        assert transcript[0].id == stored[0].id
        summary = await chat.get_conversation(run.conversation_id)
        assert summary.message_count == 4 and summary.last_message_preview == "two"
    assert [_command(q) for q in shared] == [
        "BEGIN;",
        "SAVEPOINT plan",
        "WITH",
        "ROLLBACK TO SAVEPOINT plan",
        "WITH",
        "ROLLBACK TO SAVEPOINT plan",
        "WITH",
        "RELEASE SAVEPOINT plan; SAVEPOINT plan",
        # The keyed append: its statement meets k0, then in the same savepoint the lock, the
        # keys stored (k0 is), and the insert of the rest, which the trigger refuses.
        "WITH",
        "ROLLBACK TO SAVEPOINT plan",
        "SELECT",
        "SELECT",
        "WITH",
        "ROLLBACK TO SAVEPOINT plan",
        "WITH",
        "RELEASE SAVEPOINT plan; SAVEPOINT plan",
        "WITH",
        "ROLLBACK TO SAVEPOINT plan",
        "COMMIT;",
    ], shared
    assert after == [], after


async def test_a_store_closed_during_a_shared_transaction_commits_none_of_it(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the store while a shared transaction runs an append that outlasts the close's
    wait, after one stored in it and one failed and rolled back to its savepoint: the close
    ends the transaction (without waiting for the slow statement), every caller is answered
    with StorageError, and nothing of it is committed."""
    monkeypatch.setattr(_postgres_driver, "CLOSE_TIMEOUT", 0.2)
    url, memory, chat, run = await _history(postgres_url)
    await _refusing(url, slow=True)
    texts = [{"role": "user", "content": t} for t in ("zero", "one", "refused", "slow")]
    async with _row_held(url, run.conversation_id):
        calls = await _queued(chat, run.id, texts)
    for _ in range(3000):
        if await _sleeping(url):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the shared transaction never reached the slow append")
    await asyncio.wait_for(memory.close(), 30)
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
    assert isinstance(results[0], list)
    assert all(isinstance(r, StorageError) for r in results[1:]), results
    assert "refused row" in str(results[2])
    assert [str(results[i]) for i in (1, 3)] == ["the store closed during the write"] * 2
    async with ChatMemory.open(url) as reopened:
        stored = await reopened.scoped(Principal("alice")).transcript(run.conversation_id)
    assert [m.content for m in stored] == ["zero"]
