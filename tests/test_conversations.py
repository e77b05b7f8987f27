"""Conversations: create, read, list with keyset cursors, update, soft delete."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatmemory import (
    ChatMemory,
    ConversationNotFound,
    HistoryNotFound,
    InvalidInputError,
    MessageNotFound,
    Principal,
)
from chatmemory.scope import Scope


async def test_start_and_get(alice: Scope) -> None:
    conv = await alice.start_conversation("Trip", metadata={"app": "demo", "n": [1, 2]})
    assert conv.owner_id == "alice" and conv.tenant_id is None
    assert conv.created_at.tzinfo is not None and conv.id.version == 7
    detail = await alice.get_conversation(str(conv.id))
    assert detail.title == "Trip" and detail.metadata == {"app": "demo", "n": [1, 2]}
    assert detail.histories == [] and detail.message_count == 0


async def test_get_with_histories_and_messages(alice: Scope) -> None:
    conv = await alice.start_conversation()
    first = await alice.start_history(conv.id, model="gpt-a", system_prompts=["Be brief."], metadata={"k": 1})
    await alice.append_messages(
        first.id, [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}]
    )
    await alice.finish_history(first.id)
    second = await alice.start_history(conv.id, model="gpt-b")
    await alice.append_messages(second.id, [{"role": "user", "content": "3"}])
    lean = await alice.get_conversation(conv.id)
    assert [h.id for h in lean.histories] == [first.id, second.id]
    assert all(h.messages is None for h in lean.histories)
    full = await alice.get_conversation(conv.id, messages=True)
    assert [[m.content for m in h.messages or []] for h in full.histories] == [["1", "2"], ["3"]]
    assert full.histories[0].system_prompts == ["Be brief."] and full.histories[0].status == "completed"
    assert full.message_count == 3


async def _make(alice: Scope, n: int) -> list[object]:
    made = []
    for i in range(n):
        conv = await alice.start_conversation(f"c{i}")
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [{"role": "user", "content": f"hello {i} " + "x" * 300}])
        made.append(conv.id)
    return made


async def test_list_order_counts_previews_and_cursors(alice: Scope, bob: Scope) -> None:
    ids = await _make(alice, 7)
    await _make(bob, 2)
    await alice.update_conversation(ids[2], pinned=True)
    seen = []
    cursor = None
    while True:
        page = await alice.list_conversations(limit=3, cursor=cursor)
        seen.extend(page.items)
        assert page.has_more == (page.next_cursor is not None)
        if not page.has_more:
            break
        cursor = page.next_cursor
    expected = [ids[2], *[i for i in reversed(ids) if i != ids[2]]]
    assert [c.id for c in seen] == expected
    assert all(c.message_count == 1 for c in seen)
    assert all(c.last_message_preview and len(c.last_message_preview) == 200 for c in seen)
    assert seen[0].last_message_preview.startswith("hello 2 ")  # type: ignore[union-attr]


async def test_activity_moves_a_conversation_up(alice: Scope) -> None:
    ids = await _make(alice, 3)
    run = await alice.start_history(ids[0], model="m")
    await alice.append_messages(run.id, [{"role": "user", "content": "new"}])
    page = await alice.list_conversations()
    assert [c.id for c in page.items] == [ids[0], ids[2], ids[1]]
    assert page.items[0].last_message_preview == "new" and page.items[0].message_count == 2


async def test_archived_filter(alice: Scope) -> None:
    ids = await _make(alice, 3)
    await alice.update_conversation(ids[1], archived=True)
    assert {c.id for c in (await alice.list_conversations()).items} == {ids[0], ids[2]}
    assert [c.id for c in (await alice.list_conversations(archived=True)).items] == [ids[1]]
    assert len((await alice.list_conversations(archived=None)).items) == 3
    await alice.update_conversation(ids[1], archived=False)
    assert len((await alice.list_conversations()).items) == 3


async def test_update_changes_only_what_is_given(alice: Scope) -> None:
    conv = await alice.start_conversation("a", metadata={"x": 1})
    updated = await alice.update_conversation(conv.id, title="b")
    assert updated.title == "b" and updated.metadata == {"x": 1}
    pinned = await alice.update_conversation(conv.id, pinned=True)
    assert pinned.pinned and pinned.title == "b"
    again = await alice.update_conversation(conv.id, pinned=True)
    assert again.pinned_at == pinned.pinned_at
    cleared = await alice.update_conversation(conv.id, title=None, metadata={}, pinned=False)
    assert cleared.title is None and cleared.metadata == {} and not cleared.pinned
    assert (await alice.get_conversation(conv.id)).model_dump(
        exclude={"histories", "message_count", "last_message_preview"}
    ) == cleared.model_dump()


async def test_bad_cursor_and_limit(alice: Scope) -> None:
    for cursor in ("garbage", "", "eyJ4Ijox", "W10"):
        with pytest.raises(InvalidInputError) as err:
            await alice.list_conversations(cursor=cursor)
        assert err.value.field == "cursor"
    message_cursor = None
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [{"role": "user", "content": str(i)} for i in range(3)])
    message_cursor = (await alice.list_messages(conversation_id=conv.id, limit=1)).next_cursor
    with pytest.raises(InvalidInputError):
        await alice.list_conversations(cursor=message_cursor)
    for limit in (0, -1, 1001, True, "5"):
        with pytest.raises(InvalidInputError) as err:
            await alice.list_conversations(limit=limit)  # type: ignore[arg-type]
        assert err.value.field == "limit"


async def test_soft_delete_cascades_in_one_timestamp(alice: Scope, memory: object) -> None:
    from sqlalchemy import select

    from chatmemory._schema import conversations, histories, messages

    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    (msg,) = await alice.append_messages(run.id, [{"role": "user", "content": "x"}])
    await alice.delete_conversation(conv.id)
    for call, err in (
        (alice.get_conversation(conv.id), ConversationNotFound),
        (alice.get_history(run.id), HistoryNotFound),
        (alice.get_message(msg.id), MessageNotFound),
        (alice.delete_conversation(conv.id), ConversationNotFound),
    ):
        with pytest.raises(err):
            await call
    assert (await alice.list_conversations(archived=None)).items == []
    engine = memory.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        stamps = {
            (await conn.execute(select(t.c.deleted_at).where(t.c.id == i))).scalar_one()
            for t, i in ((conversations, conv.id), (histories, run.id), (messages, msg.id))
        }
    assert len(stamps) == 1 and None not in stamps


async def test_concurrent_conversation_creation(alice: Scope) -> None:
    made = await asyncio.gather(*(alice.start_conversation(f"t{i}") for i in range(20)))
    listed = await alice.list_conversations(limit=100)
    assert {c.id for c in listed.items} == {c.id for c in made}


async def test_the_count_and_preview_follow_every_change_of_the_messages(alice: Scope) -> None:
    """A conversation's live message count and preview after each way its messages go or
    change: deleted one by one, completed while pending, replaced, a whole history deleted,
    and one deleted while another is appended."""
    conv = await alice.start_conversation()
    first = await alice.start_history(conv.id, model="m")
    second = await alice.start_history(conv.id, model="m")
    a = await alice.append_messages(first.id, [{"role": "user", "content": f"a{i}"} for i in range(3)])
    pending = {"role": "assistant", "content": "", "status": "pending"}
    b = await alice.append_messages(second.id, [{"role": "user", "content": "b0"}, pending])

    async def check(count: int) -> None:
        live = await alice.transcript(conv.id)
        summary = await alice.get_conversation(conv.id)
        assert summary.message_count == len(live) == count
        assert summary.last_message_preview == (live[-1].content[:200] if live else None)

    await check(5)
    await alice.delete_message(a[1].id)  # in the middle
    await check(4)
    await alice.complete_message(b[1].id, content="the answer")  # the newest, completed
    await check(4)
    await alice.delete_message(b[1].id)  # the newest
    await check(3)
    replacing = [{"role": "user", "content": "c0"}, {"role": "user", "content": "c1"}]
    await alice.replace_messages(conv.id, replacing=[b[0].id], history_id=second.id, messages=replacing)
    await check(4)
    await alice.delete_history(first.id)  # a0 and a2 with it
    await check(2)
    newest = (await alice.transcript(conv.id))[-1]
    await asyncio.gather(
        alice.append_messages(second.id, [{"role": "user", "content": "d0"}]), alice.delete_message(newest.id)
    )
    await check(2)


async def test_times_stored_on_sqlite_with_an_offset_read_back_as_the_same_instant(tmp_path: Path) -> None:
    """SQLite keeps times as naive UTC text; one written there with an offset (by another tool)
    still reads back as the instant it names, in UTC, as do the times this store wrote."""
    path = tmp_path / "t.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        chat = memory.scoped(Principal("alice"))
        kept, changed = (
            await chat.start_conversation(title="kept"),
            await chat.start_conversation(title="changed"),
        )
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute(
            "UPDATE chat_conversations SET created_at = '2026-01-01 02:00:00.000000+02:00' WHERE id = ?",
            (changed.id.hex,),
        )
        raw.commit()
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        chat = memory.scoped(Principal("alice"))
        assert (await chat.get_conversation(changed.id)).created_at == datetime(2026, 1, 1, tzinfo=UTC)
        assert (await chat.get_conversation(kept.id)).created_at == kept.created_at
        listed = {c.id: c.created_at for c in (await chat.list_conversations()).items}
        assert listed == {changed.id: datetime(2026, 1, 1, tzinfo=UTC), kept.id: kept.created_at}
