"""PostgreSQL: an append or a run's end whose messages carry keys is one statement that does not
look its keys up (``Stmt.unread_keys``). Where a key is stored already, even by a writer that
committed while the statement waited for the conversation's lock (after its snapshot), the key
index refuses the insert, nothing is written, and the call runs again as the plan that looks the
keys up under the lock: each key is stored once, and every caller is answered with the stored
message. Two stores stand for two processes; each call is made to wait on the conversation's
row, held from a third connection, until both have sent their statement."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from chatmemory import ChatMemory, History, Principal
from chatmemory import _schema as schema
from chatmemory import _sql as sql
from chatmemory.scope import Scope
from tests.conftest import _create_database
from tests.test_postgres_group_commit import _plain, _row_held


async def _waiting_on_locks(url: str) -> int:
    """How many backends of the database wait for a lock."""
    watcher = await asyncpg.connect(_plain(url))
    try:
        return int(
            await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        )
    finally:
        await watcher.close()


async def _racing(url: str, history: History, *calls: Any) -> list[Any]:
    """Run ``calls`` (coroutine factories) while the history's conversation row is held, and let
    them go once every one waits for it, so each one's statement took its snapshot before the
    others committed."""
    async with _row_held(url, history.conversation_id):
        started = [asyncio.ensure_future(call()) for call in calls]
        for _ in range(3000):
            if await _waiting_on_locks(url) == len(calls):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the calls never all waited for the conversation's row")
    return await asyncio.wait_for(asyncio.gather(*started), 30)


async def _two_stores(postgres_url: str) -> tuple[str, ChatMemory, ChatMemory, Scope, Scope, History]:
    url = await _create_database(postgres_url)
    first, second = await ChatMemory.open(url), await ChatMemory.open(url)
    one, other = first.scoped(Principal("alice")), second.scoped(Principal("alice"))
    conversation = await one.start_conversation()
    return url, first, second, one, other, await one.start_history(conversation.id, model="m")


async def test_one_key_appended_by_two_processes_at_once_is_stored_once(postgres_url: str) -> None:
    url, first, second, one, other, run = await _two_stores(postgres_url)
    async with first, second:
        message = {"role": "user", "content": "hi", "key": "k"}
        a, b = await _racing(
            url,
            run,
            lambda: one.append_messages(run.id, [message]),
            lambda: other.append_messages(run.id, [message]),
        )
        assert a == b and a[0].seq == 1 and a[0].key == "k"
        transcript = await one.transcript(run.conversation_id)
        assert [(m.id, m.seq) for m in transcript] == [(a[0].id, 1)]
        summary = await one.get_conversation(run.conversation_id)
        assert (summary.message_count, summary.last_message_preview) == (1, "hi")
        after = await other.append_messages(run.id, [{"role": "user", "content": "next"}])
        assert after[0].seq == 2


async def test_a_run_ended_with_a_key_another_process_appended_meanwhile(postgres_url: str) -> None:
    """Either may take the lock first: the key is stored once, both answers carry that message,
    the run's other message is stored after it, and the run is finished either way."""
    url, first, second, one, other, run = await _two_stores(postgres_url)
    async with first, second:
        answer = {"role": "assistant", "content": "hello", "key": "a"}
        done = {"role": "assistant", "content": "bye", "key": "b"}
        appended, finished = await _racing(
            url,
            run,
            lambda: one.append_messages(run.id, [answer]),
            lambda: other.finish_run(run.id, messages=[answer, done]),
        )
        assert finished.history.status == "completed"
        assert finished.messages[0] == appended[0]
        transcript = await one.transcript(run.conversation_id)
        assert [(m.key, m.seq) for m in transcript] == [("a", 1), ("b", 2)]
        assert [m.id for m in transcript] == [m.id for m in finished.messages]
        summary = await one.get_conversation(run.conversation_id)
        assert (summary.message_count, summary.last_message_preview) == (2, "bye")


async def test_many_keyed_appends_from_two_processes_store_each_key_once(postgres_url: str) -> None:
    """Two stores resending the same keyed turns as fast as they can (no lock held): every key is
    stored once, in one of the orders the turns were sent in, with consecutive ``seq``."""
    _url, first, second, one, other, run = await _two_stores(postgres_url)
    async with first, second:
        turns = [
            [
                {"role": "user", "content": f"q{i}", "key": f"q{i}"},
                {"role": "assistant", "content": f"a{i}", "key": f"a{i}"},
            ]
            for i in range(30)
        ]

        async def send(chat: Scope) -> list[list[Any]]:
            return [await chat.append_messages(run.id, turn) for turn in turns]

        mine, theirs = await asyncio.gather(send(one), send(other))
        assert [[m.id for m in t] for t in mine] == [[m.id for m in t] for t in theirs]
        transcript = await one.transcript(run.conversation_id)
        assert [m.key for m in transcript] == [m["key"] for turn in turns for m in turn]
        assert [m.seq for m in transcript] == list(range(1, 61))
        assert (await one.get_conversation(run.conversation_id)).message_count == 60


def test_the_driver_names_the_schemas_key_index() -> None:
    """The driver tells a stored key from any other refusal by the index's name."""
    table = schema.metadata.tables["chat_messages"]
    assert [index.name for index in table.indexes if index.unique] == [sql.KEY_INDEX]
