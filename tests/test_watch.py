"""Watching changes: every committed change once, in commit order, scoped like every call."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from uuid import UUID

import pytest

from chatmemory import (
    ChangeEvent,
    ChatMemory,
    ConflictError,
    ConversationNotFound,
    InvalidInputError,
    NewMessage,
    Principal,
    StorageError,
    _changes,
)
from chatmemory._db import create_engine
from chatmemory._export import FORMAT_VERSION
from chatmemory._messages import append
from chatmemory._plan import Plan, Stmt
from chatmemory._sql import SQL
from chatmemory.scope import Scope

WAIT = 10.0


async def watching(chat: Scope, conversation_id: UUID | None = None) -> AsyncGenerator[ChangeEvent, None]:
    """A watch from now on (a watch without a cursor starts where its iteration starts)."""
    return chat.watch(conversation_id, after=await chat.change_cursor(conversation_id))


async def take(events: AsyncIterator[ChangeEvent], n: int, seconds: float | None = WAIT) -> list[ChangeEvent]:
    """The next ``n`` events (failing if they do not come within ``seconds``)."""
    out: list[ChangeEvent] = []

    async def go() -> None:
        async for event in events:
            out.append(event)
            if len(out) == n:
                return

    await asyncio.wait_for(go(), seconds)
    return out


async def nothing_more(events: AsyncIterator[ChangeEvent], seconds: float = 0.3) -> None:
    try:
        event = await asyncio.wait_for(anext(events), seconds)
    except TimeoutError:
        return
    pytest.fail(f"unexpected {event}")


def kinds(events: list[ChangeEvent]) -> list[tuple[str, int | None]]:
    return [(e.kind, e.seq) for e in events]


async def test_each_write_is_an_event_in_commit_order(alice: Scope) -> None:
    conv = await alice.start_conversation(title="t")
    async with aclosing(await watching(alice, conv.id)) as events:
        run = await alice.start_history(conv.id, model="m")
        user, pending, other = await alice.append_messages(
            run.id,
            [
                NewMessage("user", "hi"),
                NewMessage("assistant", "", status="pending"),
                NewMessage("assistant", "", status="pending"),
            ],
        )
        await alice.complete_message(pending.id, content="done")
        await alice.fail_message(other.id, error="boom")
        first = await take(events, 6)
        await alice.delete_message(user.id)
        await alice.update_history(run.id, metadata={"k": 1})
        await alice.finish_history(run.id)
        await alice.update_conversation(conv.id, title="renamed")
        await alice.delete_history(run.id)
        got = first + await take(events, 5)
        await alice.delete_conversation(conv.id)
        (deleted,) = await take(events, 1)
        with pytest.raises(ConversationNotFound):
            await anext(events)
    assert kinds(got) == [
        ("history.started", None),
        ("message.appended", 1),
        ("message.appended", 2),
        ("message.appended", 3),
        ("message.completed", 2),
        ("message.failed", 3),
        ("message.deleted", 1),
        ("history.updated", None),
        ("history.finished", None),
        ("conversation.updated", None),
        ("history.deleted", None),
    ]
    assert deleted.kind == "conversation.deleted" and deleted.conversation_id == conv.id
    assert all(e.conversation_id == conv.id for e in got)
    assert [e.history_id for e in got if e.kind != "conversation.updated"] == [run.id] * 10
    assert [e.message_id for e in got[1:7]] == [user.id, pending.id, other.id, pending.id, other.id, user.id]
    # A message event carries the message as stored when the event is read (None once deleted).
    assert got[1].message is not None and got[1].message.content == "hi"
    assert got[6].message is None
    assert got[2].message is not None and got[2].message.content == "done"
    assert got[5].message is not None and got[5].message.error == "boom"
    assert all(e.at.tzinfo is not None and e.at <= datetime.now(UTC) for e in got)
    assert len({e.cursor for e in got}) == len(got)


async def test_a_recorded_run_is_its_events_in_the_order_written(alice: Scope) -> None:
    async with aclosing(await watching(alice)) as events:
        recorded = await alice.record_run(
            model="m", title="t", messages=[NewMessage("user", "q"), NewMessage("assistant", "a")]
        )
        got = await take(events, 5)
    assert kinds(got) == [
        ("conversation.created", None),
        ("history.started", None),
        ("message.appended", 1),
        ("message.appended", 2),
        ("history.finished", None),
    ]
    assert [e.message.content for e in got[2:4] if e.message] == ["q", "a"]
    assert {e.conversation_id for e in got} == {recorded.conversation_id}


@pytest.mark.parametrize("how", ["start_run and finish_run", "record_run"])
async def test_a_run_recorded_into_a_conversation_is_its_events(alice: Scope, how: str) -> None:
    """``start_run`` and ``finish_run`` (what adapters call), or ``record_run`` into a conversation,
    log their steps like the calls they join."""
    conv = await alice.start_conversation()
    async with aclosing(await watching(alice, conv.id)) as events:
        if how == "record_run":
            run = await alice.record_run(
                conv.id, model="m", messages=[NewMessage("user", "q"), NewMessage("assistant", "a")]
            )
        else:
            started = await alice.start_run(conv.id, model="m", messages=[NewMessage("user", "q")])
            run = await alice.finish_run(started.history.id, messages=[NewMessage("assistant", "a")])
        got = await take(events, 4)
        await nothing_more(events)
    assert kinds(got) == [
        ("history.started", None),
        ("message.appended", 1),
        ("message.appended", 2),
        ("history.finished", None),
    ]
    assert [e.message.content for e in got[1:3] if e.message] == ["q", "a"]
    assert {e.history_id for e in got} == {run.history.id}


async def test_replace_merge_and_import_are_events(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    old = await alice.append_messages(run.id, [NewMessage("user", "a"), NewMessage("assistant", "b")])
    async with aclosing(await watching(alice)) as events:
        await alice.replace_messages(
            conv.id, replacing=[m.id for m in old], history_id=run.id, messages=[NewMessage("user", "x")]
        )
        await alice.merge_and_append(
            {conv.id: {"k": 1}}, history_id=run.id, messages=[NewMessage("user", "y")]
        )
        copy = await alice.import_conversation(await alice.export_conversation(conv.id), new_ids=True)
        got = await take(events, 6)
    assert kinds(got) == [
        ("message.deleted", 1),
        ("message.deleted", 2),
        ("message.appended", 3),
        ("conversation.updated", None),
        ("message.appended", 4),
        ("conversation.created", None),
    ]
    assert [e.message_id for e in got[:2]] == [m.id for m in old]
    assert got[-1].conversation_id == copy.id


async def test_messages_a_replacement_deleted_name_their_history_once_purged(memory: ChatMemory) -> None:
    """A deletion event names the message's history however it was deleted, as ``delete_message``'s
    do, also when it is read after the messages were purged."""
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    old = await alice.append_messages(run.id, [NewMessage("user", "a"), NewMessage("assistant", "b")])
    cursor = await alice.change_cursor(conv.id)
    await alice.replace_messages(conv.id, replacing=[m.id for m in old])
    await memory.scoped(Principal("admin", admin=True)).purge_deleted(deleted_before=datetime.now(UTC))
    async with aclosing(alice.watch(conv.id, after=cursor)) as events:
        got = await take(events, 2)
    assert kinds(got) == [("message.deleted", 1), ("message.deleted", 2)]
    assert [(e.message_id, e.history_id) for e in got] == [(m.id, run.id) for m in old]


async def test_eight_concurrent_writers_are_seen_in_seq_order(alice: Scope) -> None:
    conv = await alice.start_conversation()
    runs = [await alice.start_history(conv.id, model="m") for _ in range(8)]
    per_writer, batch = 6, 3
    total = 8 * per_writer * batch

    async def write(run_id: object, w: int) -> None:
        for i in range(per_writer):
            await alice.append_messages(
                str(run_id), [NewMessage("user", f"{w}.{i}.{j}") for j in range(batch)]
            )

    async with aclosing(await watching(alice, conv.id)) as one, aclosing(await watching(alice)) as every:
        await asyncio.gather(*(write(r.id, w) for w, r in enumerate(runs)))
        seen, sidebar = await take(one, total), await take(every, total)
        await nothing_more(one)
    assert [e.seq for e in seen] == list(range(1, total + 1))
    assert [(e.kind, e.seq, e.message_id) for e in sidebar] == [(e.kind, e.seq, e.message_id) for e in seen]
    stored = await alice.transcript(conv.id)
    assert [e.message_id for e in seen] == [m.id for m in stored]
    # Each append's messages arrive together, in the order sent.
    texts = [e.message.content for e in seen if e.message]
    for first in range(0, total, batch):
        w, i, _ = texts[first].split(".")
        assert texts[first : first + batch] == [f"{w}.{i}.{j}" for j in range(batch)]


async def test_a_reconnect_with_a_cursor_gets_exactly_the_rest(alice: Scope) -> None:
    conv = await alice.start_conversation()
    start = await alice.change_cursor(conv.id)
    run = await alice.start_history(conv.id, model="m")
    for i in range(5):
        added = await alice.append_messages(run.id, [NewMessage("user", f"{i}.{j}") for j in range(4)])
        await alice.delete_message(added[i % 4].id)
    await alice.finish_history(run.id)
    async with aclosing(alice.watch(conv.id, after=start)) as events:
        everything = await take(events, 1 + 5 * 5 + 1)
    assert everything[-1].kind == "history.finished"
    # A cursor in the middle of one append's messages too.
    points = [0, 3, len(everything) - 1, *random.sample(range(len(everything)), 6)]
    for point in points:
        rest = everything[point + 1 :]
        for scope_id in (conv.id, None):
            async with aclosing(alice.watch(scope_id, after=everything[point].cursor)) as events:
                again = await take(events, len(rest)) if rest else []
                await nothing_more(events, 0.1)
            assert [(e.kind, e.seq, e.message_id, e.cursor) for e in again] == [
                (e.kind, e.seq, e.message_id, e.cursor) for e in rest
            ]


async def test_change_cursor_then_load_then_watch_misses_nothing(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", "before")])
    cursor = await alice.change_cursor(conv.id)
    await alice.append_messages(run.id, [NewMessage("user", "between")])
    async with aclosing(alice.watch(conv.id, after=cursor)) as events:
        (event,) = await take(events, 1)
        await nothing_more(events, 0.1)
    assert event.message is not None and event.message.content == "between"
    # Without a cursor a watch starts at the head: what came before is not replayed.
    async with aclosing(alice.watch(conv.id)) as events:
        await nothing_more(events, 0.1)


async def test_no_event_from_a_rolled_back_write(memory: ChatMemory, alice: Scope, backend: str) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    (tail,) = await alice.append_messages(run.id, [NewMessage("user", "keep")])
    elsewhere = await alice.start_conversation()
    foreign_run = await alice.start_history(elsewhere.id, model="m")
    async with aclosing(await watching(alice)) as events:
        # Deletes the tail in the database, then refuses the history: all of it rolls back.
        with pytest.raises(InvalidInputError):
            await alice.replace_messages(
                conv.id, replacing=[tail.id], history_id=foreign_run.id, messages=[NewMessage("user", "x")]
            )
        # An append whose transaction fails in the database after the append (and, on
        # PostgreSQL, its change rows and notification) was written.
        with pytest.raises(StorageError):
            await memory._db.run(_append_then_fail(alice.principal, run.id, backend), write=True)
        await alice.finish_history(run.id)
        with pytest.raises(ConflictError):
            await alice.append_messages(run.id, [NewMessage("user", "late")])
        # A transaction that writes a change row (and notifies) by hand, then rolls back.
        async with memory.engine.connect() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO chat_changes (id, chat_conversation_id, kind, created_at) "
                f"VALUES (999999, '{conv.id.hex}', 'conversation.updated', '2030-01-01')"
            )
            if backend == "postgres":
                await conn.exec_driver_sql("SELECT pg_notify('chatmemory_changes', '')")
            await conn.rollback()
        await alice.update_conversation(conv.id, title="after")
        got = await take(events, 2)
        await nothing_more(events)
    assert kinds(got) == [("history.finished", None), ("conversation.updated", None)]
    assert [m.id for m in await alice.transcript(conv.id)] == [tail.id]


def _append_then_fail(principal: Principal, history_id: UUID, backend: str) -> Plan[None]:
    batch = [NewMessage("user", "rolled back")]
    yield from append(principal, history_id, batch, datetime.now(UTC), one_statement=backend == "postgres")
    yield Stmt(SQL("SELECT no_such_column FROM chat_changes"), {})


async def test_cancelled_writes_leave_events_for_what_committed(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    rng = random.Random(7)
    async with aclosing(await watching(alice, conv.id)) as events:
        for i in range(20):
            task = asyncio.ensure_future(alice.append_messages(run.id, [NewMessage("user", str(i))] * 2))
            await asyncio.sleep(rng.random() * 0.004)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.sleep(0)
        stored = await alice.transcript(conv.id)
        got = await take(events, len(stored)) if stored else []
        await nothing_more(events)
    assert [e.message_id for e in got] == [m.id for m in stored]


async def test_scoped_like_every_call(memory: ChatMemory, alice: Scope, bob: Scope, admin: Scope) -> None:
    other_tenant = memory.scoped(Principal("bob", tenant="acme"))
    mine = await bob.start_conversation()
    hers = await alice.start_conversation()
    with pytest.raises(ConversationNotFound):
        await anext(bob.watch(hers.id))
    with pytest.raises(ConversationNotFound):
        await bob.change_cursor(hers.id)
    async with (
        aclosing(await watching(bob)) as bob_all,
        aclosing(await watching(bob, mine.id)) as bob_one,
        aclosing(await watching(admin)) as admin_all,
        aclosing(await watching(other_tenant)) as tenant_all,
    ):
        run = await alice.start_history(hers.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", "secret")] * 3)
        await alice.update_conversation(hers.id, title="x")
        await alice.start_conversation()
        await alice.delete_conversation(hers.id)
        await bob.update_conversation(mine.id, title="bob's")
        (only,) = await take(bob_all, 1)
        (also,) = await take(bob_one, 1)
        seen = await take(admin_all, 8)
        await nothing_more(bob_all, 0.1)
        await nothing_more(tenant_all, 0.1)
    assert only.conversation_id == also.conversation_id == mine.id
    assert [e.kind for e in seen][-1] == "conversation.updated"
    assert {e.conversation_id for e in seen} >= {hers.id, mine.id}


async def test_a_deleted_conversation_ends_its_watch(alice: Scope) -> None:
    conv = await alice.start_conversation()
    keep = await alice.start_conversation()
    before = await alice.change_cursor(conv.id)
    async with aclosing(await watching(alice)) as sidebar:
        async with aclosing(await watching(alice, conv.id)) as events:
            await alice.delete_conversation(conv.id)
            (last,) = await take(events, 1)
            with pytest.raises(ConversationNotFound):
                await anext(events)
        assert last.kind == "conversation.deleted"
        # The sidebar goes on.
        await alice.update_conversation(keep.id, title="still here")
        assert [e.kind for e in await take(sidebar, 2)] == ["conversation.deleted", "conversation.updated"]
    # Resuming from before the deletion still delivers it, then ends; a new watch ends at once.
    async with aclosing(alice.watch(conv.id, after=before)) as events:
        assert (await take(events, 1))[0].kind == "conversation.deleted"
        with pytest.raises(ConversationNotFound):
            await anext(events)
    with pytest.raises(ConversationNotFound):
        await anext(alice.watch(conv.id))


async def test_bad_cursors_and_intervals_are_input_errors(alice: Scope, db_url: str) -> None:
    conv = await alice.start_conversation()
    page_cursor = "WyJjIix0cnVlLCIyMDI1LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwieCJd"
    for bad in ("nope", "", page_cursor, "WyJ3IiwtMSwwXQ", "WyJ3IiwxLHRydWVd"):
        with pytest.raises(InvalidInputError) as err:
            await anext(alice.watch(conv.id, after=bad))
        assert err.value.field == "after"
    with pytest.raises(InvalidInputError):
        await anext(alice.watch("not-an-id"))
    for interval in (0, -1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(InvalidInputError) as err:
            await ChatMemory.open(db_url, watch_interval=interval)  # type: ignore[arg-type]
        assert err.value.field == "watch_interval"
        engine = create_engine(db_url)
        try:
            with pytest.raises(InvalidInputError):
                ChatMemory(engine, watch_interval=interval)  # type: ignore[arg-type]
        finally:
            await engine.dispose()


async def test_import_is_a_created_event(alice: Scope) -> None:
    document = {
        "format_version": FORMAT_VERSION,
        "conversation": {
            "id": "0190a000-0000-7000-8000-000000000001",
            "owner_id": "alice",
            "title": "imported",
            "metadata": {},
            "created_at": "2025-01-01T00:00:00+00:00",
            "updated_at": "2025-01-01T00:00:00+00:00",
        },
        "histories": [],
    }
    async with aclosing(await watching(alice)) as events:
        conv = await alice.import_conversation(document)
        (event,) = await take(events, 1)
    assert (event.kind, event.conversation_id) == ("conversation.created", conv.id)


async def test_reads_in_small_batches_lose_nothing(
    alice: Scope, bob: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch reads a bounded number of changes at a time; the next read starts where it stopped."""
    monkeypatch.setattr(_changes, "_READ_ROWS", 3)
    start = await alice.change_cursor()
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    expected: list[tuple[str, int | None]] = [("conversation.created", None), ("history.started", None)]
    for i in range(4):
        await bob.start_conversation()
        await alice.append_messages(run.id, [NewMessage("user", f"{i}.{j}") for j in range(3)])
        expected += [("message.appended", 3 * i + j + 1) for j in range(3)]
    for scope_id in (None, conv.id):
        after = start if scope_id is None else await _cursor_before_first(alice, conv.id, start)
        async with aclosing(alice.watch(scope_id, after=after)) as events:
            got = await take(events, len(expected) - (scope_id is not None))
            await nothing_more(events, 0.1)
        assert kinds(got) == expected[(scope_id is not None) :]


async def _cursor_before_first(chat: Scope, conversation_id: UUID, start: str) -> str:
    """The cursor of the conversation's first event (its creation, read through the sidebar)."""
    async with aclosing(chat.watch(after=start)) as events:
        (first,) = await take(events, 1)
    assert first.conversation_id == conversation_id
    return first.cursor
