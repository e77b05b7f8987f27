"""Upgrading a database that already holds data: from the first revision to head, nothing lost.

The rows are written with plain SQL against revision 0001's tables, as an old release left
them, so the test does not depend on today's models to produce the old state.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from chatmemory import ChatMemory, Principal
from chatmemory._db import Database, create_engine
from chatmemory._migrate import current_revision, head_revision, upgrade
from chatmemory.content import TextPart, ToolCallPart

START = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
ALICE, CAROL = Principal("alice"), Principal("carol", tenant="acme")


def _id(n: int) -> uuid.UUID:
    return uuid.UUID(int=(0x0190_0000_0000_7000_8000 << 48) + n)


CONVERSATIONS = [
    # id, owner, tenant, title, deleted
    (_id(1), "alice", None, "Trip to Rome", False),
    (_id(2), "carol", "acme", "Quarterly numbers", False),
    (_id(3), "alice", None, "Deleted long ago", True),
]
HISTORIES = [
    # id, conversation, model, status
    (_id(11), _id(1), "gpt-4.1", "completed"),
    (_id(12), _id(1), "claude-sonnet", "running"),
    (_id(13), _id(2), "gpt-4.1", "running"),
    (_id(14), _id(3), "gpt-4.1", "completed"),
]
PARTS = [
    {"type": "text", "text": "Booking the hotel"},
    {"type": "tool_call", "id": "c1", "name": "book", "arguments": {"city": "Rome"}},
]
NATIVE = {"format": "openai-chat", "data": {"role": "assistant", "tool_calls": []}}


def _message(n: int, conv: int, hist: int, seq: int, role: str, content: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": _id(n),
        "conv": _id(conv),
        "hist": _id(hist),
        "seq": seq,
        "role": role,
        "content": content,
    } | extra


MESSAGES = [
    _message(21, 1, 11, 1, "user", "Find a hotel in Rome"),
    _message(22, 1, 11, 2, "assistant", "Booking the hotel", parts=PARTS, model="gpt-4.1", native=NATIVE,
             usage={"output_tokens": 7}),
    _message(23, 1, 11, 3, "tool", "secret deleted line", deleted=True),
    _message(24, 1, 12, 4, "user", "And a restaurant?", key="u-4", metadata={"lang": "en"}),
    _message(25, 1, 12, 5, "assistant", "", model="claude-sonnet", status="pending"),
    _message(26, 2, 13, 1, "user", "Revenue für Q3 — größer?"),
    _message(27, 3, 14, 1, "user", "hotel in a deleted conversation", deleted=True),
]  # fmt: skip
JSON_COLUMNS = {"metadata", "system_prompts", "parts", "usage", "native"}


async def _insert(conn: AsyncConnection, sqlite: bool, table: str, row: dict[str, Any]) -> None:
    """One row as 0001's column types store it (SQLite has no UUID, JSON or timestamp types)."""
    values: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, uuid.UUID):
            value = value.hex if sqlite else value
        elif isinstance(value, datetime):
            value = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ") if sqlite else value
        elif name in JSON_COLUMNS and value is not None:
            value = json.dumps(value)
        values[name] = value
    marks = [f":{n}" if sqlite or n not in JSON_COLUMNS else f"CAST(:{n} AS JSON)" for n in values]
    sql = f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join(marks)})"
    await conn.execute(text(sql), values)


async def _fill_0001(db: Database) -> None:
    async with db.engine.begin() as conn:
        for i, (cid, owner, tenant, title, deleted) in enumerate(CONVERSATIONS):
            live = [m for m in MESSAGES if m["conv"] == cid and not m.get("deleted")]
            when = START + timedelta(minutes=i)
            row = {
                "id": cid,
                "owner_id": owner,
                "tenant_id": tenant,
                "title": title,
                "metadata": {"n": i},
                "pinned_at": when if i == 1 else None,
                "archived_at": None,
                "last_seq": max(m["seq"] for m in MESSAGES if m["conv"] == cid),
                "message_count": len(live),
                "last_message_preview": live[-1]["content"][:200] if live else None,
                "created_at": when,
                "updated_at": when,
                "deleted_at": when if deleted else None,
            }
            await _insert(conn, db.is_sqlite, "chat_conversations", row)
        for hid, cid, model, status in HISTORIES:
            row = {
                "id": hid,
                "chat_conversation_id": cid,
                "model": model,
                "system_prompts": ["Be brief."],
                "metadata": None,
                "status": status,
                "usage": None,
                "error": None,
                "finished_at": START if status != "running" else None,
                "created_at": START,
                "updated_at": START,
                "deleted_at": None,
            }
            await _insert(conn, db.is_sqlite, "chat_histories", row)
        for m in MESSAGES:
            when = START + timedelta(seconds=m["seq"])
            row = {
                "id": m["id"],
                "chat_conversation_id": m["conv"],
                "chat_history_id": m["hist"],
                "seq": m["seq"],
                "role": m["role"],
                "content": m["content"],
                **{name: m.get(name) for name in ("parts", "model", "usage", "metadata", "native", "key")},
                "status": m.get("status", "complete"),
                "error": None,
                "created_at": when,
                "updated_at": when,
                "deleted_at": when if m.get("deleted") else None,
            }
            await _insert(conn, db.is_sqlite, "chat_messages", row)


async def test_upgrade_from_0001_keeps_every_row_and_indexes_old_messages(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        db = Database(engine)
        await upgrade(db, "0001")
        assert await current_revision(db) == "0001"
        await _fill_0001(db)
    finally:
        await engine.dispose()

    async with ChatMemory.open(db_url) as memory:
        assert await current_revision(memory._db) == head_revision() != "0001"
        alice, carol = memory.scoped(ALICE), memory.scoped(CAROL)

        page = await alice.list_conversations()
        assert [(c.id, c.title, c.message_count) for c in page.items] == [(_id(1), "Trip to Rome", 4)]
        assert page.items[0].metadata == {"n": 0} and page.items[0].created_at == START
        detail = await alice.get_conversation(_id(1), messages=True)
        assert [h.model for h in detail.histories] == ["gpt-4.1", "claude-sonnet"]
        assert detail.histories[0].system_prompts == ["Be brief."]
        transcript = await alice.transcript(_id(1))
        live = [m for m in MESSAGES if m["conv"] == _id(1) and not m.get("deleted")]
        assert [(m.id, m.seq, m.role, m.content, m.status) for m in transcript] == [
            (m["id"], m["seq"], m["role"], m["content"], m.get("status", "complete")) for m in live
        ]
        booked = transcript[1]
        assert booked.parts == [
            TextPart(text="Booking the hotel"),
            ToolCallPart(id="c1", name="book", arguments={"city": "Rome"}),
        ]
        assert booked.native is not None and booked.native.model_dump() == MESSAGES[1]["native"]
        assert (booked.usage, booked.model) == ({"output_tokens": 7}, "gpt-4.1")
        assert booked.created_at == START + timedelta(seconds=2)
        assert transcript[2].metadata == {"lang": "en"} and transcript[2].key == "u-4"
        assert [m.content for m in (await carol.transcript(_id(2)))] == ["Revenue für Q3 — größer?"]

        # Search covers the rows written before the search index existed, and only live, visible ones.
        hits = await alice.search_messages("hotel")
        assert sorted(h.message.id for h in hits.items) == [_id(21), _id(22)]
        assert (await alice.search_messages("secret")).items == []
        assert (await alice.search_messages("revenue")).items == []
        assert [h.message.id for h in (await carol.search_messages("größer")).items] == [_id(26)]

        # The old rows take part in every operation: keys, seq, pending messages, listing counters.
        again = await alice.append_messages(_id(12), [{"role": "user", "content": "dup", "key": "u-4"}])
        assert again[0].id == _id(24)
        (new,) = await alice.append_messages(_id(12), [{"role": "user", "content": "one more hotel"}])
        assert new.seq == 6
        done = await alice.complete_message(_id(25), content="Trattoria da Enzo")
        assert done.model == "claude-sonnet"
        assert [h.message.id for h in (await alice.search_messages("trattoria")).items] == [_id(25)]
        context = await alice.get_context(_id(1))
        assert [m.seq for m in context.messages] == [1, 2, 4, 5, 6]
        summary = (await alice.list_conversations()).items[0]
        assert (summary.message_count, summary.last_message_preview) == (5, "one more hotel")
        await alice.delete_history(_id(11))
        assert sorted(h.message.id for h in (await alice.search_messages("hotel")).items) == [new.id]
        if memory._db.is_sqlite:
            # 0009 edited the tables' definitions in place: the file is sound and the checks compare.
            async with memory._db.transaction() as conn:
                assert (await conn.execute(text("PRAGMA integrity_check"))).scalar_one() == "ok"
                stored = text("SELECT sql FROM sqlite_master WHERE name = 'chat_messages'")
                assert "CHECK (role = 'system' OR role = 'user'" in (await conn.execute(stored)).scalar_one()
