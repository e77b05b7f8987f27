"""What the search index holds and when: tool calls are searchable, every committed live message
is found at once (both backends index at search time, never in an append), also with writers
and searchers running at once, changed content is re-indexed, imported messages are found, and a
hard delete of the newest message does not hide the next one."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from chatmemory import (
    ChatMemory,
    NewMessage,
    Principal,
    StorageError,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    _search,
)
from chatmemory._migrate import downgrade, upgrade
from chatmemory.scope import Scope
from tests.transactions import counted

_INDEX_ROWS = {
    "sqlite": "SELECT count(*) FROM chat_messages_fts",
    "postgres": "SELECT count(*) FROM chat_messages_search",
}


async def _indexed(memory: ChatMemory, backend: str) -> int:
    async with memory.engine.connect() as conn:
        return int((await conn.execute(text(_INDEX_ROWS[backend]))).scalar_one())


async def _texts(scope: Scope, query: str, limit: int = 100) -> list[str]:
    return [hit.message.content for hit in (await scope.search_messages(query, limit=limit)).items]


async def test_tool_call_names_and_arguments_are_searchable(alice: Scope, bob: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    call = ToolCallPart(id="c1", name="lookup_weather", arguments={"city": "Trondheim", "unit": "celsius"})
    raw = ToolCallPart(id="c2", name="run_sql", arguments='{"query": "select kittens"}')
    await alice.append_messages(
        run.id,
        [
            NewMessage("user", "what is it like up north"),
            NewMessage("assistant", [call]),
            NewMessage("tool", [ToolResultPart(call_id="c1", content="cold")]),
            NewMessage("assistant", [raw]),
        ],
    )
    for query in ("lookup_weather", "trondheim", "celsius", "kittens", "run_sql"):
        hits = (await alice.search_messages(query)).items
        assert len(hits) == 1, query
        assert hits[0].message.parts is not None and hits[0].message.role == "assistant"
    assert await _texts(bob, "trondheim") == []


async def test_a_tool_call_too_long_to_index_whole_does_not_break_search(alice: Scope, bob: Scope) -> None:
    """Arguments of 200,000 distinct words: past what one PostgreSQL ``tsvector`` holds (1 MiB),
    so PostgreSQL indexes the start of them and SQLite all of them."""
    words = [f"w{i}" for i in range(200_000)]
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    call = ToolCallPart(id="c1", name="write_file", arguments=" ".join(words))
    await alice.append_messages(run.id, [NewMessage("assistant", [call]), NewMessage("user", "thanks")])
    assert await _texts(alice, "thanks") == ["thanks"]
    assert await _texts(alice, f"write_file {words[0]}") == [""]
    other = await bob.start_conversation()
    await bob.append_messages((await bob.start_history(other.id, model="m")).id, [NewMessage("user", "hi")])
    assert await _texts(bob, "hi") == ["hi"]


async def test_content_completed_with_a_tool_call_too_long_to_index_whole(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    (pending,) = await alice.append_messages(run.id, [NewMessage("assistant", "", status="pending")])
    await alice.search_messages("anything")  # indexed as pending: completing it re-indexes it
    arguments = " ".join(f"w{i}" for i in range(200_000))
    call = ToolCallPart(id="c1", name="write_file", arguments=arguments)
    done = await alice.complete_message(pending.id, content=[TextPart(text="Writing"), call])
    assert done.status == "complete"
    assert await _texts(alice, "writing write_file w0") == ["Writing"]


async def test_every_append_is_found_by_the_next_search(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    for i in range(5):
        await alice.append_messages(run.id, [NewMessage("user", f"needle number{i}")])
        assert len(await _texts(alice, "needle")) == i + 1
        assert await _texts(alice, f"number{i}") == [f"needle number{i}"]
    deleted = (await alice.transcript(conv.id))[0]
    await alice.delete_message(deleted.id)
    assert "needle number0" not in await _texts(alice, "needle")


async def test_completed_content_is_searchable(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    (pending,) = await alice.append_messages(run.id, [NewMessage("assistant", "", status="pending")])
    assert await _texts(alice, "placeholder") == []  # indexes the pending message, empty
    await alice.complete_message(pending.id, content="the placeholder is filled")
    assert await _texts(alice, "placeholder") == ["the placeholder is filled"]


async def test_a_reused_rowid_after_deleting_the_newest_is_indexed(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", "first"), NewMessage("user", "second")])
        assert await _texts(alice, "second") == ["second"]
        with sqlite3.connect(path, isolation_level=None) as raw:
            raw.execute("DELETE FROM chat_messages WHERE content = 'second'")
        raw.close()
        await alice.append_messages(run.id, [NewMessage("user", "third")])
        assert await _texts(alice, "third") == ["third"]
        assert await _texts(alice, "second") == []


async def test_an_append_leaves_indexing_to_the_next_search(memory: ChatMemory, backend: str) -> None:
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", "indexed later"), NewMessage("user", "me too")])
    assert await _indexed(memory, backend) == 0
    assert await _texts(alice, "later") == ["indexed later"]
    assert await _indexed(memory, backend) == 2
    await alice.append_messages(run.id, [NewMessage("user", "one more")])
    assert await _indexed(memory, backend) == 2
    assert await _texts(alice, "more") == ["one more"]
    assert await _indexed(memory, backend) == 3


async def test_writers_and_searchers_at_once_find_every_committed_message(db_url: str) -> None:
    """Two stores (on PostgreSQL two pools) with three writers each; after each append its
    writer searches for what it wrote while the others append and search."""
    async with ChatMemory.open(db_url) as first, ChatMemory.open(db_url) as second:

        async def writer(memory: ChatMemory, n: int) -> None:
            scope = memory.scoped(Principal("alice"))
            conv = await scope.start_conversation()
            run = await scope.start_history(conv.id, model="m")
            for i in range(12):
                word = f"w{n}x{i}"
                await scope.append_messages(run.id, [NewMessage("user", f"needle {word}")])
                assert await _texts(scope, word) == [f"needle {word}"], word

        await asyncio.gather(*(writer(memory, n) for n, memory in enumerate([first, second] * 3)))
        assert len(await _texts(first.scoped(Principal("alice")), "needle")) == 72


async def test_imported_messages_are_found(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", "exported hedgehog")])
    document = await alice.export_conversation(conv.id)
    assert len(await _texts(alice, "hedgehog")) == 1
    copy = await alice.import_conversation(document, new_ids=True)
    hits = (await alice.search_messages("hedgehog")).items
    assert sorted(str(h.conversation_id) for h in hits) == sorted([str(conv.id), str(copy.id)])


async def test_imports_and_new_conversations_in_one_backlog_are_indexed_in_parts(
    memory: ChatMemory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog of imported conversations (logged as a whole), conversations started empty then
    appended to, one recorded at once, and appends to an imported one, indexed in parts of 4:
    each message is indexed once and found."""
    monkeypatch.setattr(_search, "INDEX_PART", 4)
    alice = memory.scoped(Principal("alice"))
    source = await alice.start_conversation()
    run = await alice.start_history(source.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", f"otter o{i}") for i in range(7)])
    document = await alice.export_conversation(source.id)
    assert len(await _texts(alice, "otter")) == 7  # indexed; the backlog starts here
    copies = [await alice.import_conversation(document, new_ids=True) for _ in range(2)]
    later = await alice.start_history(copies[0].id, model="m")
    await alice.append_messages(later.id, [NewMessage("user", f"otter later l{i}") for i in range(3)])
    for n in range(3):
        fresh = await alice.start_history((await alice.start_conversation()).id, model="m")
        await alice.append_messages(fresh.id, [NewMessage("user", f"otter fresh f{n}x{i}") for i in range(3)])
    await alice.record_run(None, model="m", messages=[NewMessage("user", "otter recorded")])
    found = await _texts(alice, "otter")
    assert len(found) == len(set(found)) + 14  # the two copies' texts are the source's
    assert len(found) == 7 * 3 + 3 + 9 + 1
    assert await _indexed(memory, backend) == 7 * 3 + 3 + 9 + 1


async def test_content_completed_before_any_search_is_found(alice: Scope) -> None:
    """Completed before the search that indexes its append: the index holds the new text and
    tool calls, never the placeholder's."""
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    (pending,) = await alice.append_messages(run.id, [NewMessage("assistant", "draft", status="pending")])
    call = ToolCallPart(id="c1", name="fetch_invoice", arguments={"number": "inv4711"})
    await alice.complete_message(pending.id, content=[call])
    assert len((await alice.search_messages("fetch_invoice")).items) == 1
    assert len((await alice.search_messages("inv4711")).items) == 1
    assert await _texts(alice, "draft") == []


async def test_search_stays_exact_across_a_downgrade_below_0006_and_back(db_url: str) -> None:
    """A message not yet indexed when the schema goes back to 0005 (PostgreSQL indexes on insert
    there), one appended at 0005, and one after upgrading again are each found once."""
    async with ChatMemory.open(db_url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", "walrus before")])
        await downgrade(memory._db, "0005")
        await alice.append_messages(run.id, [NewMessage("user", "walrus between")])
        await upgrade(memory._db)
        await alice.append_messages(run.id, [NewMessage("user", "walrus after")])
        assert sorted(await _texts(alice, "walrus")) == ["walrus after", "walrus before", "walrus between"]


async def test_a_read_only_postgresql_database_still_searches(postgres_url: str) -> None:
    """A standby cannot index: its searches find what searches on the primary indexed."""
    from tests.conftest import _create_database

    url = await _create_database(postgres_url)
    async with ChatMemory.open(url) as primary:
        alice = primary.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", "indexed walrus")])
        assert await _texts(alice, "walrus") == ["indexed walrus"]
        await alice.append_messages(run.id, [NewMessage("user", "unindexed walrus")])
        async with primary.engine.connect() as conn:
            name = primary.engine.url.database
            await conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
            await conn.commit()
    async with ChatMemory.open(url, migrate=False) as standby:
        assert await _texts(standby.scoped(Principal("alice")), "walrus") == ["indexed walrus"]


async def test_a_read_only_sqlite_database_still_searches(tmp_path: Path) -> None:
    """A SQLite database opened read-only (``mode=ro``: a backup, a file another user owns)
    cannot index either: its searches find what earlier searches indexed, as a standby's do."""
    path = tmp_path / "chat.db"
    async with ChatMemory.open(f"sqlite:///{path}") as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", "indexed walrus")])
        assert await _texts(alice, "walrus") == ["indexed walrus"]
        await alice.append_messages(run.id, [NewMessage("user", "unindexed walrus")])
    for migrate in (False, True):
        async with ChatMemory.open(f"sqlite:///file:{path}?mode=ro&uri=true", migrate=migrate) as read_only:
            assert await _texts(read_only.scoped(Principal("alice")), "walrus") == ["indexed walrus"]


async def test_a_search_indexing_while_a_purge_removes_unindexed_messages(postgres_url: str) -> None:
    """PostgreSQL: a search indexes while a purge has removed soft-deleted messages that no search
    indexed yet and has not committed; the search neither waits for those messages nor fails when
    the purge commits."""
    from tests._postgres import create_database, drop_database

    url = await create_database(postgres_url)
    try:
        async with ChatMemory.open(url) as memory:
            alice = memory.scoped(Principal("alice"))
            admin = memory.scoped(Principal("root", admin=True))
            kept = await alice.start_conversation()
            await alice.append_messages(
                (await alice.start_history(kept.id, model="m")).id, [NewMessage("user", "kept walrus")]
            )
            doomed = await alice.start_conversation()
            run = await alice.start_history(doomed.id, model="m")
            await alice.append_messages(run.id, [NewMessage("user", f"doomed walrus {i}") for i in range(3)])
            await alice.delete_conversation(doomed.id)
            async with memory.engine.connect() as blocker, memory.engine.connect() as watcher:
                # Holding the history's row stops the purge after it removed the messages.
                await blocker.execute(
                    text("SELECT 1 FROM chat_histories WHERE id = :h FOR UPDATE"), {"h": run.id}
                )

                async def waiting() -> int:
                    found = await watcher.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                        )
                    )
                    await watcher.commit()
                    return int(found.scalar_one())

                purge = asyncio.create_task(
                    admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(1))
                )
                while await waiting() < 1:
                    await asyncio.sleep(0.01)
                search = asyncio.create_task(_texts(alice, "walrus"))
                while not search.done() and await waiting() < 2:
                    await asyncio.sleep(0.01)
                await blocker.rollback()
                counts = await purge
                assert await search == ["kept walrus"]
            assert (counts.conversations, counts.histories, counts.messages) == (1, 1, 3)
            assert await _texts(alice, "walrus") == ["kept walrus"]
    finally:
        await drop_database(postgres_url, url)


async def test_a_long_tail_is_indexed_in_parts_and_found_whole(
    memory: ChatMemory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a bulk load a search indexes what it finds in parts, each a write transaction of
    its own (on SQLite the store's other writers go on between them; on PostgreSQL each is a
    statement well within a statement timeout), and still finds every live message and no
    deleted one. A message written once the search began is left to the next search."""
    monkeypatch.setattr(_search, "INDEX_PART", 10)
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    stored = []
    for start in range(0, 95, 5):  # PostgreSQL parts whole appends: two of these to a part
        batch = [NewMessage("user", f"bulk b{i}") for i in range(start, start + 5)]
        stored += await alice.append_messages(run.id, batch)
    for message in stored[::9]:
        await alice.delete_message(message.id)
    live = sorted(m.content for m in stored[1::9] + [m for i, m in enumerate(stored) if i % 9 > 1])
    late: list[str] = []
    with counted(memory) as transactions:
        run_plans = memory._db.run

        async def one_write_then_an_append(plan: Any, *, write: bool = False, **options: Any) -> Any:
            answer = await run_plans(plan, write=write, **options)
            if write and not late:  # between the search's first part and the next
                late.append("bulk late")
                await alice.append_messages(run.id, [NewMessage("user", "bulk late")])
            return answer

        memory._db.run = one_write_then_an_append  # type: ignore[method-assign]
        try:
            found = sorted(await _texts(alice, "bulk"))
        finally:
            memory._db.run = run_plans  # type: ignore[method-assign]
    assert found == live
    assert transactions.count("write") == 10 + 1  # and the append's
    assert await _indexed(memory, backend) == (95 if backend == "sqlite" else 95 - 11)
    assert sorted(await _texts(alice, "bulk")) == sorted([*live, *late])


async def test_what_a_part_indexed_stays_indexed_when_a_later_part_fails(
    memory: ChatMemory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search whose third part fails (a statement timeout, a lost connection) raises, keeping
    the two parts before it: the next search goes on from there and finds every message. (On
    PostgreSQL the first search over a backlog was one statement: cut short, it kept nothing, so
    under a statement timeout shorter than the whole, search failed for good.)"""
    monkeypatch.setattr(_search, "INDEX_PART", 10)
    alice = memory.scoped(Principal("alice"))
    run = await alice.start_history((await alice.start_conversation()).id, model="m")
    for start in range(0, 60, 5):
        batch = [NewMessage("user", f"kept k{i}") for i in range(start, start + 5)]
        await alice.append_messages(run.id, batch)
    run_plans = memory._db.run
    parts: list[str] = []

    async def third_part_fails(plan: Any, *, write: bool = False, **options: Any) -> Any:
        if getattr(plan, "__name__", "") == "_index_tail":
            parts.append("part")
            if len(parts) == 3:
                plan.close()
                raise StorageError("database error: canceling statement due to statement timeout")
        return await run_plans(plan, write=write, **options)

    memory._db.run = third_part_fails  # type: ignore[method-assign]
    try:
        with pytest.raises(StorageError, match="statement timeout"):
            await alice.search_messages("kept")
    finally:
        memory._db.run = run_plans  # type: ignore[method-assign]
    assert await _indexed(memory, backend) == 20
    with counted(memory) as transactions:
        assert sorted(await _texts(alice, "kept")) == sorted(f"kept k{i}" for i in range(60))
    assert transactions.count("write") == 4
    assert await _indexed(memory, backend) == 60


async def test_a_backlog_is_searched_under_a_statement_timeout_shorter_than_indexing_it_whole(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL with a ``statement_timeout`` (as managed services set one): the first search
    over 30,000 messages, longer to index than the timeout allows in one statement, indexes them
    (a part at a time) and finds them; the store's connections keep the timeout."""
    from tests._postgres import (
        analyze,
        append_all,
        create_database,
        drop_database,
        set_statement_timeout,
        statement_timeout,
    )

    monkeypatch.setattr(_search, "INDEX_PART", 500)
    url = await create_database(postgres_url)
    try:
        async with ChatMemory.open(url) as memory:
            alice = memory.scoped(Principal("alice"))
            run = await alice.start_history((await alice.start_conversation()).id, model="m")
            words = " ".join(f"filler{w}" for w in range(40))
            await append_all(
                alice, run.id, [NewMessage("user", f"needle n{i} {words}") for i in range(30_000)], 500
            )
        # Statistics as autovacuum gathers them after a load: the timeout is to cut indexing short,
        # not the search's own query, planned as if the tables were empty.
        await analyze(url)
        await set_statement_timeout(url, 200)
        async with ChatMemory.open(url) as memory:
            alice = memory.scoped(Principal("alice"))
            assert await statement_timeout(memory) == "200ms"
            # Words each in one message: a word in all 30,000 would time the ranking of them all.
            last = (await alice.search_messages("n29999")).items
            assert [hit.message.content.split()[1] for hit in last] == ["n29999"]
            assert await _indexed(memory, "postgres") == 30_000
            first = (await alice.search_messages("n0")).items
            assert [hit.message.content.split()[1] for hit in first] == ["n0"]
    finally:
        await drop_database(postgres_url, url)


async def test_a_large_import_is_searched_under_a_statement_timeout_shorter_than_indexing_it(
    postgres_url: str,
) -> None:
    """PostgreSQL with a ``statement_timeout``: an import is one change, never split into parts,
    so the first search after a large one indexes it in one statement, longer than the timeout
    allows. Indexing is exempt from it: the search finds the imported messages (every search
    failed on it, for good, while the timeout applied)."""
    from tests._postgres import (
        analyze,
        append_all,
        create_database,
        drop_database,
        set_statement_timeout,
        statement_timeout,
    )

    url = await create_database(postgres_url)
    try:
        async with ChatMemory.open(url) as memory:
            alice = memory.scoped(Principal("alice"))
            conv = await alice.start_conversation()
            run = await alice.start_history(conv.id, model="m")
            words = " ".join(f"filler{w}" for w in range(40))
            await append_all(
                alice, run.id, [NewMessage("user", f"needle n{i} {words}") for i in range(30_000)], 1_000
            )
            document = await alice.export_conversation(conv.id)
            # Imported before the timeout is set: it is the indexing the timeout is to cut short,
            # not the import's own statements (which a loaded machine may slow past it).
            copy = await alice.import_conversation(document, new_ids=True)
        # Statistics as autovacuum gathers them after a load: the timeout is to cut indexing short,
        # not the search's own query, planned as if the tables were empty.
        await analyze(url)
        await set_statement_timeout(url, 200)
        async with ChatMemory.open(url) as memory:
            alice = memory.scoped(Principal("alice"))
            hits = (await alice.search_messages("n29999")).items
            assert sorted(str(hit.conversation_id) for hit in hits) == sorted([str(conv.id), str(copy.id)])
            assert await statement_timeout(memory) == "200ms"
    finally:
        await drop_database(postgres_url, url)


async def test_searches_at_once_index_a_tail_in_parts_and_each_finds_it_whole(tmp_path: Path) -> None:
    """Two stores on one SQLite file, four writers each, each appending a message then searching,
    at once, indexing in parts of 7: each part starts at the mark the last one left, whoever
    wrote it, and a search that began before a later one finished never moves it back, so no
    message is indexed twice or skipped."""
    url = f"sqlite:///{tmp_path / 'parts.db'}"
    async with ChatMemory.open(url) as first, ChatMemory.open(url) as second:
        alice = first.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", f"bulk c{i}") for i in range(200)])
        _search.INDEX_PART, part = 7, _search.INDEX_PART
        try:

            async def append_then_search(memory: ChatMemory, n: int) -> list[str]:
                scope = memory.scoped(Principal("alice"))
                for i in range(3):
                    await scope.append_messages(run.id, [NewMessage("user", f"bulk w{n}x{i}")])
                    found = await _texts(scope, "bulk", 1000)
                    assert f"bulk w{n}x{i}" in found
                return found

            results = await asyncio.gather(
                *(append_then_search(memory, n) for n, memory in enumerate((first, second) * 4))
            )
        finally:
            _search.INDEX_PART = part
        every = {f"bulk c{i}" for i in range(200)}
        assert all(len(r) == len(set(r)) and every <= set(r) for r in results)
        assert sorted(await _texts(alice, "bulk", 1000)) == sorted(
            every | {f"bulk w{n}x{i}" for n in range(8) for i in range(3)}
        )
        assert await _indexed(first, "sqlite") == 224


@pytest.mark.parametrize("part", [5_000, 3], ids=["one part", "parts"])
async def test_newest_messages_hard_deleted_once_a_search_began_leave_the_next_ones_indexed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part: int
) -> None:
    """A search reads the tail's end when it begins; a purge that then removes the newest
    messages (before its first part or between two) leaves the mark at or below the newest
    rowid left, so the messages appended next, which take the purged rowids again, are found."""
    monkeypatch.setattr(_search, "INDEX_PART", part)
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'p.db'}") as memory:
        alice = memory.scoped(Principal("alice"))
        admin = memory.scoped(Principal("root", admin=True))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        stored = await alice.append_messages(run.id, [NewMessage("user", f"kept k{i}") for i in range(4)])
        stored += await alice.append_messages(run.id, [NewMessage("user", f"purged p{i}") for i in range(6)])
        for message in stored[4:]:
            await alice.delete_message(message.id)
        run_plans = memory._db.run
        purged: list[bool] = []

        async def purge_once_the_tail_is_read(plan: Any, *, write: bool = False, **options: Any) -> Any:
            name = getattr(plan, "__name__", "")
            answer = await run_plans(plan, write=write, **options)
            if name == ("_index_tail" if part < 5_000 else "_unindexed") and not purged:
                purged.append(True)
                await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(1))
            return answer

        memory._db.run = purge_once_the_tail_is_read  # type: ignore[method-assign]
        try:
            assert sorted(await _texts(alice, "kept")) == [f"kept k{i}" for i in range(4)]
        finally:
            memory._db.run = run_plans  # type: ignore[method-assign]
        assert purged
        await alice.append_messages(run.id, [NewMessage("user", f"fresh f{i}") for i in range(6)])
        assert sorted(await _texts(alice, "fresh")) == [f"fresh f{i}" for i in range(6)]
        assert await _texts(alice, "purged") == []


async def test_a_search_indexing_a_message_purged_before_its_index_row_is_written(postgres_url: str) -> None:
    """PostgreSQL: the indexing statement has found a live message; before it writes that
    message's index row, the message is deleted and purged, and the purge commits. Found by
    review (a rare race): the search failed with the index's foreign-key violation. A trigger
    that sleeps once before the first index row is written holds the statement at that point."""
    from tests._postgres import create_database, drop_database

    url = await create_database(postgres_url)
    try:
        async with ChatMemory.open(url) as memory:
            alice = memory.scoped(Principal("alice"))
            admin = memory.scoped(Principal("root", admin=True))
            conv = await alice.start_conversation()
            run = await alice.start_history(conv.id, model="m")
            doomed, _ = await alice.append_messages(
                run.id, [NewMessage("user", "doomed walrus"), NewMessage("user", "kept walrus")]
            )
            async with memory.engine.connect() as conn:
                for statement in (
                    "CREATE SEQUENCE slow_once",
                    "CREATE FUNCTION slow_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF nextval('slow_once') = 1 THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$",
                    "CREATE TRIGGER slow_once BEFORE INSERT ON chat_messages_search "
                    "FOR EACH ROW EXECUTE FUNCTION slow_once()",
                ):
                    await conn.execute(text(statement))
                await conn.commit()
                search = asyncio.create_task(_texts(alice, "walrus"))
                asleep = text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event = 'PgSleep'"
                )
                while not (await conn.execute(asleep)).scalar_one():
                    await conn.commit()
                    await asyncio.sleep(0.01)
                await conn.commit()
            await alice.delete_message(doomed.id)
            counts = await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(1))
            assert counts.messages == 1
            assert not search.done()  # the indexing statement still sleeps before its first row
            assert await search == ["kept walrus"]
    finally:
        await drop_database(postgres_url, url)
