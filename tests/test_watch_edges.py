"""Watches driven the way a chat app drives them: cursors it kept (from another database, from
before a purge), resumes after a large backlog, and reads it gives up on part-way."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chatmemory import (
    ChatMemory,
    ConversationNotFound,
    InvalidInputError,
    NewMessage,
    Principal,
    _changes,
    _cursor,
)
from chatmemory._plan import Stmt
from chatmemory.scope import Scope
from tests.test_watch import WAIT, take


async def test_a_cursor_ahead_of_every_change_is_refused(alice: Scope) -> None:
    """A cursor this database never gave (one kept from another database, or one made up) would
    make the watch skip every change until the log caught up with it: it is an input error."""
    conv = await alice.start_conversation()
    store = await alice._store()
    current, _, _ = _changes.parse_cursor(await alice.change_cursor())  # the position after the head
    for ahead in (_changes.cursor(current + 1, 0, store), _changes.cursor(current + 1000, 0, store)):
        for scope_id in (None, conv.id):
            with pytest.raises(InvalidInputError) as err:
                await asyncio.wait_for(anext(alice.watch(scope_id, after=ahead)), WAIT)
            assert err.value.field == "after"


async def test_a_cursor_of_another_database_behind_this_head_is_refused(
    memory: ChatMemory, alice: Scope, tmp_path: Path
) -> None:
    """Change ids start at 1 in every database, so a cursor kept from another one (staging, a
    database rebuilt from an export) names a position here too; resumed from, it would replay
    changes that never followed what the client had. Each database has an identity of its own,
    which its cursors carry: such a cursor is refused, as one ahead of every change is."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/elsewhere.db") as other:
        elsewhere = other.scoped(Principal("alice"))
        await elsewhere.start_conversation(title="elsewhere")
        kept = await elsewhere.change_cursor()
    conv = await alice.start_conversation()
    for n in range(3):
        await alice.update_conversation(conv.id, title=f"here {n}")
    assert _changes.parse_cursor(kept)[0] < _changes.parse_cursor(await alice.change_cursor())[0]
    for scope_id in (None, conv.id):
        with pytest.raises(InvalidInputError) as err:
            await asyncio.wait_for(anext(alice.watch(scope_id, after=kept)), WAIT)
        assert err.value.field == "after" and "another database" in str(err.value)


async def test_cursors_keep_resuming_across_a_reopen_and_from_before_they_named_their_database(
    memory: ChatMemory, alice: Scope, db_url: str
) -> None:
    """The identity is the database's, not the open store's: a cursor resumes on another store
    opened on the same database. A cursor handed out before databases had identities (the
    position alone) still resumes."""
    conv = await alice.start_conversation()
    cursor = await alice.change_cursor()
    change_id, done, _ = _changes.parse_cursor(cursor)
    before = _cursor.encode("w", change_id, done)
    await alice.update_conversation(conv.id, title="later")
    async with ChatMemory.open(db_url) as again:
        there = again.scoped(Principal("alice"))
        for after in (cursor, before):
            async with aclosing(there.watch(after=after)) as events:
                (event,) = await take(events, 1)
            assert (event.kind, event.conversation_id) == ("conversation.updated", conv.id)
            assert _changes.parse_cursor(event.cursor)[2] == _changes.parse_cursor(cursor)[2]


async def test_a_cursor_kept_across_a_purge_still_resumes(alice: Scope, admin: Scope) -> None:
    """Purging removes the newest changes with their conversation; a cursor past them stays good."""
    kept = await alice.start_conversation()
    gone = await alice.start_conversation()
    await alice.delete_conversation(gone.id)
    cursor = await alice.change_cursor()
    await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(seconds=1))
    async with (
        aclosing(alice.watch(after=cursor)) as sidebar,
        aclosing(alice.watch(kept.id, after=cursor)) as one,
    ):
        await alice.update_conversation(kept.id, title="after the purge")
        assert [e.kind for e in await take(sidebar, 1)] == ["conversation.updated"]
        assert [e.kind for e in await take(one, 1)] == ["conversation.updated"]


async def test_a_backlog_of_large_appends_is_read_a_bounded_number_of_events_at_a_time(
    memory: ChatMemory, alice: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume after many appends of many messages each (a bulk load) reads them page by page,
    not every message of a few hundred changes at once; nothing is lost or repeated."""
    monkeypatch.setattr(_changes, "_READ_EVENTS", 5)
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    start = await alice.change_cursor()
    for i in range(6):
        await alice.append_messages(run.id, [NewMessage("user", f"{i}.{j}") for j in range(4)])
    reads: list[int] = []

    def trace(stmt: Stmt) -> None:
        if isinstance(stmt.params, dict) and "after" in stmt.params and "chat_changes" in stmt.sql.sqlite:
            reads.append(stmt.params["after"])

    for scope_id in (None, conv.id):
        reads.clear()
        memory._db.set_trace(trace)
        try:
            async with aclosing(alice.watch(scope_id, after=start)) as events:
                got = await take(events, 24)
        finally:
            memory._db.set_trace(None)
        assert [e.message.content for e in got if e.message is not None] == [
            f"{i}.{j}" for i in range(6) for j in range(4)
        ]
        # Two appends (8 events, at least 5) per read.
        assert len(reads) >= 3, reads


async def test_watches_cancelled_mid_read_let_go_and_the_store_goes_on(
    memory: ChatMemory, alice: Scope
) -> None:
    """A UI that gives up on a read (its own timeout, a closed tab) at any point of it: the watch
    ends, leaves no wakeup behind, and the store serves the next watch and write as before."""
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    start = await alice.change_cursor(conv.id)
    await alice.append_messages(run.id, [NewMessage("user", str(i)) for i in range(50)])
    for turn in range(30):
        watch = alice.watch(conv.id if turn % 2 else None, after=start)
        reading = asyncio.ensure_future(anext(watch))
        for _ in range(turn % 6):  # cancelled after a varying number of loop turns
            await asyncio.sleep(0)
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(reading, WAIT)
        await asyncio.wait_for(watch.aclose(), WAIT)
    hub = memory._db.changes
    with hub._lock:
        assert not hub._waiters
    async with aclosing(alice.watch(conv.id, after=start)) as events:
        got = await take(events, 50)
        (last,) = await alice.append_messages(run.id, [NewMessage("user", "after")])
        (more,) = await take(events, 1)
    assert [e.seq for e in got] == list(range(1, 51)) and more.message_id == last.id


async def test_a_sidebar_resumed_across_a_purge_of_what_it_had_not_seen_is_refused(
    alice: Scope, admin: Scope
) -> None:
    """A sidebar that saw a conversation start, then went away while it was deleted and
    purged, would never hear of the deletion (purged with it) and keep showing it: the resume
    is an input error naming ``after`` (reload, then watch from a new cursor), never a silent
    gap. A conversation's own watch refuses as before: the conversation is gone."""
    gone = await alice.start_conversation(title="gone")
    kept = await alice.start_conversation(title="kept")
    shown = await alice.change_cursor()  # the sidebar shows both
    await alice.delete_conversation(gone.id)
    await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(seconds=1))
    await alice.update_conversation(kept.id, title="after the purge")
    with pytest.raises(InvalidInputError) as err:
        await asyncio.wait_for(anext(alice.watch(after=shown)), WAIT)
    assert err.value.field == "after"
    with pytest.raises(ConversationNotFound):
        await asyncio.wait_for(anext(alice.watch(gone.id, after=shown)), WAIT)
    async with aclosing(alice.watch(kept.id, after=shown)) as events:  # nothing of it is gone
        assert [e.kind for e in await take(events, 1)] == ["conversation.updated"]
    # A sidebar watching live as the purge runs reads past it; a cursor taken after it resumes.
    async with aclosing(alice.watch(after=await alice.change_cursor())) as live:
        doomed = await alice.start_conversation()
        await alice.delete_conversation(doomed.id)
        assert [e.kind for e in await take(live, 2)] == ["conversation.created", "conversation.deleted"]
        await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(seconds=1))
        await alice.update_conversation(kept.id, title="again")
        assert [e.kind for e in await take(live, 1)] == ["conversation.updated"]


async def test_a_conversation_restored_after_a_purge_refuses_a_resume_from_before(
    alice: Scope, admin: Scope
) -> None:
    """A UI showing a conversation went away while it was deleted, purged and restored from an
    older export (same ids): resuming would yield only the restore's ``conversation.created``,
    and the UI would keep showing messages that are gone. The resume is an input error naming
    ``after`` (reload); a watch from a cursor taken after the restore goes on as usual."""
    conv = await alice.start_conversation(title="restored")
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", "kept in the backup")])
    backup = await alice.export_conversation(conv.id)
    await alice.append_messages(run.id, [NewMessage("user", "not in the backup")])
    shown = await alice.change_cursor(conv.id)
    await alice.delete_conversation(conv.id)
    await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(seconds=1))
    await alice.import_conversation(backup)
    with pytest.raises(InvalidInputError) as err:
        await asyncio.wait_for(anext(alice.watch(conv.id, after=shown)), WAIT)
    assert err.value.field == "after"
    async with aclosing(alice.watch(conv.id, after=await alice.change_cursor(conv.id))) as events:
        await alice.update_conversation(conv.id, title="after the restore")
        assert [e.kind for e in await take(events, 1)] == ["conversation.updated"]


async def test_a_sidebar_catching_up_checks_for_purged_changes_once(
    memory: ChatMemory, alice: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sidebar resumed far behind reads its backlog page by page; the check that nothing after
    its cursor was purged counts up to the head on the first read only, not on every page."""
    monkeypatch.setattr(_changes, "_READ_EVENTS", 5)
    start = await alice.change_cursor()
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    for i in range(6):
        await alice.append_messages(run.id, [NewMessage("user", f"{i}.{j}") for j in range(4)])
    reads: list[bool] = []

    def trace(stmt: Stmt) -> None:
        if isinstance(stmt.params, dict) and "budget" in stmt.params:
            reads.append("count(*) FROM chat_changes" in stmt.sql.sqlite)

    memory._db.set_trace(trace)
    try:
        async with aclosing(alice.watch(after=start)) as events:
            got = await take(events, 2 + 24)
    finally:
        memory._db.set_trace(None)
    assert [e.seq for e in got[2:]] == list(range(1, 25))
    assert len(reads) >= 3 and reads[0] and not any(reads[1:]), reads
