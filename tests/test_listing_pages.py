"""Listing pages across the pinned/unpinned boundary, and pages read in index order (no sort)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chatmemory import ChatMemory, Principal
from chatmemory import _sql as sql
from chatmemory.scope import Scope


async def test_pages_cross_from_pinned_to_the_rest(alice: Scope, bob: Scope) -> None:
    ids = [(await alice.start_conversation(f"c{i}")).id for i in range(7)]
    await bob.start_conversation("not alice's")
    for i in (1, 4, 6):
        await alice.update_conversation(ids[i], pinned=True)
    await alice.update_conversation(ids[5], archived=True)
    await alice.update_conversation(ids[2], title="touched last")  # most recently updated
    every = (await alice.list_conversations(limit=100)).items
    expected = [ids[6], ids[4], ids[1], ids[2], ids[3], ids[0]]
    assert [c.id for c in every] == expected
    for limit in (1, 2, 3, 4):
        seen, cursor = [], None
        while True:
            page = await alice.list_conversations(limit=limit, cursor=cursor)
            seen += [c.id for c in page.items]
            if not page.has_more:
                break
            cursor = page.next_cursor
        assert seen == expected, limit
    assert [c.id for c in (await alice.list_conversations(archived=True)).items] == [ids[5]]
    assert len((await alice.list_conversations(archived=None)).items) == 7


async def test_sqlite_listing_and_message_pages_need_no_sort(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        await memory.scoped(Principal("alice")).start_conversation()
    # A listing page is these parts, each limited to the page, merged (see sql.listing).
    statements = [
        sql.list_conversations(scope, pinned, archived, after)
        for scope in ((True, False), (False, False), (True, True), (False, True))
        for pinned in (True, False)
        for archived in (None, False)
        for after in (False, True)
    ] + [
        sql.list_messages((True, False), by_conversation, not by_conversation, newest, after)
        for by_conversation in (True, False)
        for newest in (True, False)
        for after in (True, False)
    ]
    raw = sqlite3.connect(path)
    try:
        for statement in statements:
            names = [part[1:] for part in statement.sqlite.split() if part.startswith(":")]
            params = dict.fromkeys((n.strip("),") for n in names), None)
            plan = " | ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement.sqlite, params))
            # Ties in updated_at may be ordered by id as they come ("RIGHT PART"); never a full sort.
            assert "TEMP B-TREE FOR ORDER BY" not in plan, (statement.sqlite, plan)
            assert "SCAN" not in plan, (statement.sqlite, plan)
            if "c.pinned_at IS NOT NULL" in statement.sqlite:  # pinned rows come from their own index
                assert "_pinned_" in plan, (statement.sqlite, plan)
    finally:
        raw.close()
