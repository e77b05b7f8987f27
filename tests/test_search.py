"""Full-text search: matching, ranking, paging, isolation and hostile input, on both backends."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import sqlite3
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from chatmemory import (
    ChatMemory,
    ConversationNotFound,
    HistoryNotFound,
    InvalidInputError,
    NewMessage,
    Principal,
    ToolResultPart,
    _migrate,
)
from chatmemory._db import Database
from chatmemory._migrate import VERSION_TABLE
from chatmemory._schema import metadata
from chatmemory._search import fts5_query, parse_query
from chatmemory.scope import Scope
from tests.transactions import committed_before, statements


async def _conversation(scope: Scope, *texts: str, title: str = "Trip") -> list[str]:
    conv = await scope.start_conversation(title)
    run = await scope.start_history(conv.id, model="m1")
    roles = ["user", "assistant"]
    stored = await scope.append_messages(
        run.id,
        [NewMessage(roles[i % 2], t) for i, t in enumerate(texts)],  # type: ignore[arg-type]
    )
    return [str(m.id) for m in stored]


async def _contents(scope: Scope, query: str, **kwargs: object) -> list[str]:
    page = await scope.search_messages(query, **kwargs)  # type: ignore[arg-type]
    return [hit.message.content for hit in page.items]


async def test_words_phrases_and_prefixes(alice: Scope) -> None:
    await _conversation(
        alice,
        "The hotel in Rome was lovely",
        "Rome has a lovely hotel",
        "Hotter than expected in Lisbon",
    )
    assert sorted(await _contents(alice, "rome hotel")) == [
        "Rome has a lovely hotel",
        "The hotel in Rome was lovely",
    ]
    assert await _contents(alice, '"hotel in rome"') == ["The hotel in Rome was lovely"]
    assert await _contents(alice, '"lovely hotel"') == ["Rome has a lovely hotel"]
    assert len(await _contents(alice, "hot*")) == 3
    assert await _contents(alice, "hot") == []
    assert await _contents(alice, "LISBON") == ["Hotter than expected in Lisbon"]


async def test_hit_carries_conversation_snippet_and_rank(alice: Scope) -> None:
    conv = await alice.start_conversation("Holiday plans")
    run = await alice.start_history(conv.id, model="m1")
    filler = " ".join(["words"] * 60)
    (msg,) = await alice.append_messages(
        run.id, [NewMessage("user", f"{filler} find the needle here {filler}")]
    )
    (hit,) = (await alice.search_messages("needle")).items
    assert hit.message == msg
    assert hit.conversation_id == conv.id
    assert hit.conversation_title == "Holiday plans"
    assert "«needle»" in hit.snippet
    assert len(hit.snippet) < len(msg.content)
    assert hit.rank > 0


async def test_ranking_by_relevance_then_recency(alice: Scope) -> None:
    await _conversation(
        alice, "pasta", "pasta pasta pasta recipe", "a long text that mentions pasta once among many"
    )
    older, newer = await _conversation(alice, "same words here", "same words here")
    contents = await _contents(alice, "pasta")
    assert contents[0] == "pasta pasta pasta recipe"
    ids = [str(hit.message.id) for hit in (await alice.search_messages("same words")).items]
    assert ids == [newer, older]


async def test_keyset_pages_cover_every_hit_once(alice: Scope) -> None:
    texts = [f"match {'extra ' * (i % 4)}number {i}" for i in range(23)]
    await _conversation(alice, *texts)
    seen: list[str] = []
    cursor = None
    while True:
        page = await alice.search_messages("match", limit=5, cursor=cursor)
        seen += [hit.message.content for hit in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(texts)
    assert page.next_cursor is None
    with pytest.raises(InvalidInputError):
        await alice.search_messages(
            "other", cursor=(await alice.search_messages("match", limit=1)).next_cursor
        )
    with pytest.raises(InvalidInputError):
        await alice.search_messages("match", cursor="garbage")


async def test_pages_cover_every_hit_once_though_others_write_between_them(alice: Scope, bob: Scope) -> None:
    """Another user's messages written between two pages (indexed by the next search), some
    with the word searched for: the pages still give each hit that was there all along once."""
    texts = [f"koala {'x ' * i}{i}" for i in range(10)]
    await _conversation(alice, *texts, "other words")
    page = await alice.search_messages("koala", limit=3)
    seen = [hit.message.content for hit in page.items]
    await _conversation(bob, *[f"filler {i}" for i in range(200)])
    while page.next_cursor is not None:
        page = await alice.search_messages("koala", limit=3, cursor=page.next_cursor)
        seen += [hit.message.content for hit in page.items]
        await _conversation(bob, *[f"filler koala {'y ' * i}" for i in range(20)])
    assert sorted(seen) == sorted(texts) and len(seen) == len(texts)


@pytest.mark.parametrize("limit", [1, 2, 5, 50])
async def test_every_hit_of_every_page_has_its_own_snippet(alice: Scope, limit: int) -> None:
    """Hits tied in rank, time and seq (the same texts in several conversations), paged with
    cursors: each hit, the last of a page too, comes with a snippet of its own content."""
    for c in range(3):
        await _conversation(alice, *(f"hotel w{c}n{i} hotel" for i in range(4)), title=f"c{c}")
    seen: list[str] = []
    cursor = None
    while True:
        page = await alice.search_messages("hotel", limit=limit, cursor=cursor)
        for hit in page.items:
            word = hit.message.content.split()[1]
            assert f"\u00abhotel\u00bb {word} \u00abhotel\u00bb" in hit.snippet, (
                hit.message.content,
                hit.snippet,
            )
        seen += [hit.message.content for hit in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(f"hotel w{c}n{i} hotel" for c in range(3) for i in range(4))


async def test_a_cursor_of_the_bm25_ranking_is_refused_on_sqlite(tmp_path: Path) -> None:
    """A cursor an older version handed out holds a bm25 rank, of another scale than the rank
    a page now compares it with: paging on from it would skip or repeat hits."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/x.db") as memory:
        alice = memory.scoped(Principal("alice"))
        await _conversation(alice, "match one", "match two")
        cursor = (await alice.search_messages("match", limit=1)).next_cursor
        assert cursor is not None
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        bm25 = hashlib.sha256(repr((fts5_query(parse_query("match")), None, None, None)).encode())
        older = json.dumps([position[0], bm25.hexdigest()[:16], *position[2:]]).encode()
        with pytest.raises(InvalidInputError, match="cursor"):
            await alice.search_messages("match", cursor=base64.urlsafe_b64encode(older).decode().rstrip("="))
        assert len((await alice.search_messages("match", cursor=cursor)).items) == 1


@pytest.mark.parametrize("rank", ["1" + "0" * 400, "NaN", "Infinity", "-Infinity"])
async def test_a_cursor_with_its_rank_changed_is_refused(alice: Scope, rank: str) -> None:
    await _conversation(alice, "match one", "match two")
    cursor = (await alice.search_messages("match", limit=1)).next_cursor
    assert cursor is not None
    position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw = json.dumps(position[:2]).rstrip("]") + f",{rank}," + json.dumps(position[3:]).lstrip("[")
    forged = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    with pytest.raises(InvalidInputError, match="cursor"):
        await alice.search_messages("match", cursor=forged)


async def test_filters(alice: Scope) -> None:
    conv = await alice.start_conversation("A")
    run1 = await alice.start_history(conv.id, model="m1")
    await alice.append_messages(
        run1.id, [NewMessage("user", "apple one"), NewMessage("assistant", "apple two")]
    )
    run2 = await alice.start_history(conv.id, model="m2")
    await alice.append_messages(
        run2.id,
        [NewMessage("tool", [ToolResultPart(call_id="c1", content="apple three")])],
    )
    await _conversation(alice, "apple elsewhere")
    assert len(await _contents(alice, "apple")) == 4
    assert len(await _contents(alice, "apple", conversation_id=conv.id)) == 3
    assert await _contents(alice, "apple", history_id=run2.id) == ["apple three"]
    assert await _contents(alice, "apple", role="assistant") == ["apple two"]
    assert await _contents(alice, "apple", conversation_id=conv.id, role="user") == ["apple one"]
    with pytest.raises(InvalidInputError):
        await alice.search_messages("apple", role="robot")


async def test_only_own_live_messages(memory: ChatMemory, alice: Scope, bob: Scope, admin: Scope) -> None:
    await _conversation(alice, "secret alpha")
    bob_conv = await bob.start_conversation("Bob")
    bob_run = await bob.start_history(bob_conv.id, model="m")
    await bob.append_messages(bob_run.id, [NewMessage("user", "secret bravo")])
    other_tenant = memory.scoped(Principal("alice", tenant="acme"))
    await _conversation(other_tenant, "secret charlie")
    assert await _contents(alice, "secret") == ["secret alpha"]
    assert await _contents(bob, "secret") == ["secret bravo"]
    assert await _contents(other_tenant, "secret") == ["secret charlie"]
    assert sorted(await _contents(admin, "secret")) == ["secret alpha", "secret bravo"]
    with pytest.raises(ConversationNotFound):
        await alice.search_messages("secret", conversation_id=bob_conv.id)
    with pytest.raises(HistoryNotFound):
        await alice.search_messages("secret", history_id=bob_run.id)


async def test_soft_deleted_never_found(alice: Scope) -> None:
    gone_msg, kept = await _conversation(alice, "zebra message", "zebra kept")
    await alice.delete_message(gone_msg)
    conv = await alice.start_conversation("B")
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", "zebra in deleted history")])
    await alice.delete_history(run.id)
    other = await alice.start_conversation("C")
    run = await alice.start_history(other.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", "zebra in deleted conversation")])
    await alice.delete_conversation(other.id)
    hits = (await alice.search_messages("zebra")).items
    assert [str(h.message.id) for h in hits] == [kept]


async def test_index_follows_completed_messages(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    (pending,) = await alice.append_messages(run.id, [NewMessage("assistant", "", status="pending")])
    await alice.complete_message(pending.id, content="generated later: walrus")
    assert await _contents(alice, "walrus") == ["generated later: walrus"]


ODD_QUERIES = [
    "",
    "   ",
    '"',
    '""',
    '"unterminated phrase',
    "*",
    "**",
    "a*b*",
    "NEAR",
    "NEAR(a b)",
    "a OR b",
    "AND",
    "NOT",
    "-",
    "-apple",
    "apple -",
    "'; DROP TABLE chat_messages; --",
    "') OR 1=1 --",
    "\\",
    "a:b",
    "col:apple",
    "^apple",
    "apple & banana | !cherry",
    "apple <-> banana",
    "(((",
    "\x00",
    "\ud800",
    "\U0001d518\U0001d52b\U0001d526 \u2603 \U0001f389",
    "x" * 5000,
    " ".join(["w"] * 500),
]


async def test_any_text_is_a_safe_query(alice: Scope) -> None:
    stored = ["apple banana cherry", "'; DROP TABLE chat_messages; -- said the user"]
    await _conversation(alice, *stored)
    for query in ODD_QUERIES:
        page = await alice.search_messages(query)
        assert {hit.message.content for hit in page.items} <= set(stored), query
    assert await _contents(alice, "") == []
    assert await _contents(alice, '"') == []
    assert await _contents(alice, "a*b*") == ["apple banana cherry"]
    assert len(await _contents(alice, "apple")) == 1
    assert len(await _contents(alice, "'; DROP TABLE chat_messages; --")) == 1


async def test_a_query_longer_than_a_message_may_be_is_refused(alice: Scope) -> None:
    await _conversation(alice, "apple pie")
    with pytest.raises(InvalidInputError, match="query: longer than 100000 characters"):
        await alice.search_messages("apple " + " " * 100_000)
    assert await _contents(alice, "apple" + " " * 99_995) == ["apple pie"]


async def test_operators_are_plain_words(alice: Scope) -> None:
    await _conversation(alice, "cats OR dogs", "cats and dogs", "NEAR the station", "drop table now")
    assert await _contents(alice, "cats OR dogs") == ["cats OR dogs"]
    assert await _contents(alice, "NEAR") == ["NEAR the station"]
    assert await _contents(alice, "'; DROP TABLE") == ["drop table now"]
    assert sorted(await _contents(alice, "-dogs")) == ["cats OR dogs", "cats and dogs"]


async def test_unicode(alice: Scope) -> None:
    await _conversation(alice, "un café à Paris", "東京 タワー", "Ελληνικά κείμενα", "naïve résumé")
    assert await _contents(alice, "café") == ["un café à Paris"]
    assert await _contents(alice, "東京") == ["東京 タワー"]
    assert await _contents(alice, "ελληνικά") == ["Ελληνικά κείμενα"]
    assert await _contents(alice, '"naïve résumé"') == ["naïve résumé"]
    assert await _contents(alice, "rés*") == ["naïve résumé"]


async def test_words_with_combining_marks(alice: Scope) -> None:
    """Vowel signs, vowel marks and separately typed accents are part of the word they are in."""
    stored = ["नमस्ते दुनिया", "สวัสดีครับ", "مَرْحَبًا بالعالم", "e\u0301cole du soir"]
    await _conversation(alice, *stored)
    for content in stored:
        for word in content.split():
            assert await _contents(alice, word) == [content], word
    assert await _contents(alice, "नमस्*") == [stored[0]]
    assert await _contents(alice, '"नमस्ते दुनिया"') == [stored[0]]
    assert await _contents(alice, "\u0301") == []
    assert await _contents(alice, "soir \u0301") == [stored[3]]


async def test_pages_of_a_query_of_two_words_cover_every_hit_though_others_write(
    alice: Scope, bob: Scope
) -> None:
    """Another user writes messages with one word of the query or the other between two pages
    (FTS5's bm25, which weighs each word by its rarity among all messages, reordered the hits
    of such a query then, so later pages skipped some)."""
    rnd = random.Random(1)
    words = (["koala"] * rnd.randint(1, 4) + ["bear"] * rnd.randint(1, 4) for _ in range(60))
    texts = [" ".join(w + ["x"] * rnd.randint(0, 30)) + f" {i}" for i, w in enumerate(words)]
    await _conversation(alice, *texts)
    page = await alice.search_messages("koala bear", limit=5)
    seen = [hit.message.content for hit in page.items]
    while page.next_cursor is not None:
        word = "koala " if len(seen) % 10 else "bear "
        filler = (word * rnd.randint(1, 5) + "y " * rnd.randint(0, 100) for _ in range(100))
        await _conversation(bob, *filler)
        page = await alice.search_messages("koala bear", limit=5, cursor=page.next_cursor)
        seen += [hit.message.content for hit in page.items]
    assert sorted(seen) == sorted(texts)


async def test_a_hits_rank_tells_nothing_of_other_users_messages(alice: Scope, bob: Scope) -> None:
    """Anything not yours looks like something that does not exist: the ranks and the order
    of a user's hits are the same whatever others write (the query's words often, rarely, in
    long or short messages), and whether they delete it again."""
    texts = ["koala bear", "koala koala bear " + "x " * 40, "bear " * 5 + "koala", "a koala, a bear, " * 3]
    await _conversation(alice, *texts)

    async def ranked() -> list[tuple[str, float]]:
        return [(h.message.content, h.rank) for h in (await alice.search_messages("koala bear")).items]

    alone = await ranked()
    assert sorted(content for content, _ in alone) == sorted(texts)
    await _conversation(bob, *("koala " * (i % 7) + "y " * (i % 50) + "bear" for i in range(300)))
    assert await ranked() == alone
    theirs = await _conversation(bob, *("koala bear" for _ in range(50)), "koala")
    assert await ranked() == alone
    for message_id in theirs[:25]:
        await bob.delete_message(message_id)
    assert await ranked() == alone


async def test_more_matches_rank_higher_and_longer_messages_lower_on_sqlite(tmp_path: Path) -> None:
    """SQLite's rank: how often the query (words, phrases, prefixes) matches in a message
    against the message's length; characters the ranking itself uses as marks count as text."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/x.db") as memory:
        alice = memory.scoped(Principal("alice"))
        await _conversation(
            alice,
            "koala y y y y y y y y y y y y y y",
            "koala koala koala y y y y y y y y y y y y",
            "koala y y y y y y y y y y y y y y y y y y y y y y y y y y y y y y y y y y y y",
        )
        found = await _contents(alice, "koala")
        assert [f.count("koala") for f in found] == [3, 1, 1]
        assert len(found[1]) < len(found[2])
        for query in ('"koala koala"', "koal*"):
            assert (await _contents(alice, query))[0].startswith("koala koala koala"), query
        await _conversation(alice, "hotel \x01\x01\x01", "hotel abc")
        letters, marks = (await alice.search_messages("hotel")).items
        assert (letters.message.content, marks.message.content) == ("hotel abc", "hotel \x01\x01\x01")
        assert marks.rank == letters.rank


async def test_emoji_next_to_a_word_separates_it_on_sqlite(tmp_path: Path) -> None:
    """A word is a run of letters, digits and combining marks: an emoji typed against a word,
    as chat messages often have it, separates it as a space would (PostgreSQL does)."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/x.db") as memory:
        alice = memory.scoped(Principal("alice"))
        await _conversation(alice, "Thanks\U0001f642 see you", "great\U0001f600 news")
        assert await _contents(alice, "great") == ["great\U0001f600 news"]  # an older emoji does
        assert await _contents(alice, "thanks") == ["Thanks\U0001f642 see you"]


async def test_an_index_built_before_emoji_separated_words_is_built_again_on_upgrade(tmp_path: Path) -> None:
    """Migration 0010: a message indexed by the tokenizer that took ``Thanks🙂`` for one word is
    found by ``thanks`` once the store is upgraded; the downgrade gives the old index back."""
    url = f"sqlite:///{tmp_path}/x.db"
    async with ChatMemory.open(url) as memory:
        alice = memory.scoped(Principal("alice"))
        await _conversation(alice, "Thanks\U0001f642 see you")
        await _migrate.downgrade(Database(memory.engine), "0009")
    old = sqlite3.connect(tmp_path / "x.db")
    try:  # what a search at 0009 indexed
        with old:
            index = "INSERT INTO chat_messages_fts (rowid, body) SELECT rowid, content FROM chat_messages"
            old.execute(index)
            old.execute("UPDATE chat_search_state SET indexed_rowid = (SELECT max(rowid) FROM chat_messages)")
        (found,) = old.execute("SELECT count(*) FROM chat_messages_fts WHERE body MATCH 'thanks'").fetchone()
        assert found == 0
    finally:
        old.close()
    async with ChatMemory.open(url) as memory:
        assert await _contents(memory.scoped(Principal("alice")), "thanks") == ["Thanks\U0001f642 see you"]


def test_parse_query() -> None:
    assert [(t.words, t.prefix) for t in parse_query('a "b c" d* "e')] == [
        (("a",), False),
        (("b", "c"), False),
        (("d",), True),
        (("e",), False),
    ]
    assert parse_query('\'; -- * " "') == []


async def test_search_schema_matches_and_downgrades(memory: ChatMemory, backend: str) -> None:
    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                "include_object": lambda _o, name, type_, *_: type_ != "table" or name in metadata.tables,
            },
        )
        return list(compare_metadata(context, metadata))

    async with memory.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    db = Database(memory.engine)
    await _migrate.downgrade(db, "0001")
    async with memory.engine.connect() as conn:
        if backend == "sqlite":
            names = (await conn.execute(text("SELECT name FROM sqlite_master"))).scalars().all()
            assert not [n for n in names if "fts" in n]
        else:
            names = (await conn.execute(text("SELECT tablename FROM pg_tables"))).scalars().all()
            assert "chat_messages_search" not in names
            functions = await conn.execute(text("SELECT proname FROM pg_proc WHERE proname LIKE 'chat%'"))
            assert functions.scalars().all() == []
    await _migrate.upgrade(db)
    scope = memory.scoped(Principal("carol"))
    await _conversation(scope, "after the round trip")
    assert await _contents(scope, "round trip") == ["after the round trip"]


async def test_existing_messages_are_indexed_by_the_migration(memory: ChatMemory) -> None:
    scope = memory.scoped(Principal("dave"))
    await _conversation(scope, "written before search existed")
    db = Database(memory.engine)
    await _migrate.downgrade(db, "0001")
    await _migrate.upgrade(db)
    assert await _contents(scope, "existed") == ["written before search existed"]


async def test_sqlite_index_survives_hard_deletes_and_vacuum(tmp_path: Path) -> None:
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'v.db'}") as memory:
        alice = memory.scoped(Principal("alice"))
        ids = await _conversation(alice, *[f"vacuum test {i}" for i in range(50)])
        for mid in ids[::3]:
            await alice.delete_message(mid)
        with sqlite3.connect(tmp_path / "v.db", isolation_level=None) as raw:
            raw.execute("DELETE FROM chat_messages WHERE deleted_at IS NOT NULL")
            raw.execute("VACUUM")
            raw.execute(
                "INSERT INTO chat_messages_fts(chat_messages_fts, rank) VALUES ('integrity-check', 1)"
            )
        raw.close()
        found = await _contents(alice, "vacuum", limit=100)
    assert sorted(found) == sorted(f"vacuum test {i}" for i in range(50) if i % 3)


async def test_a_snippet_is_of_the_hit_it_comes_with(memory: ChatMemory, db_url: str) -> None:
    """Another store completes the message found, with new content, just before the snippets
    are made (on SQLite their own statement; on PostgreSQL the page's one statement, which makes
    them): each hit's snippet is of the content it comes with, never of the other. Two
    statements, each its own snapshot on PostgreSQL, paired the old content with the new
    content's snippet."""
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    batch = [NewMessage("assistant", "rome hotel", status="pending")]
    (pending,) = await alice.append_messages(run.id, batch)
    assert [h.snippet for h in (await alice.search_messages("hotel")).items] == ["rome «hotel»"]
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))
        marker = "snippet(" if memory._db.is_sqlite else "ts_headline("
        completing = lambda: other.complete_message(pending.id, content="paris hotel")  # noqa: E731
        with committed_before(memory, marker, completing) as done:
            hits = (await alice.search_messages("hotel")).items
        assert done, "the completion ran"
    assert [(h.message.content, h.snippet) for h in hits] in (
        [("rome hotel", "rome «hotel»")],
        [("paris hotel", "paris «hotel»")],
    )


async def test_a_filtered_search_with_hits_checks_no_filter_of_its_own(memory: ChatMemory) -> None:
    """A hit is of a visible conversation and history, those the filters name: a page with hits
    is the index's check (a read) and the page (on SQLite, and its snippets), the filters
    checked only when there is no hit, where they still tell not found and a history of
    another conversation."""
    alice, bob = memory.scoped(Principal("alice")), memory.scoped(Principal("bob"))
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", "rome hotel")])
    other = await alice.start_conversation()
    await alice.search_messages("hotel")  # indexes what was written
    with statements(memory) as sent:
        hits = await alice.search_messages("hotel", conversation_id=conv.id, history_id=run.id, role="user")
    assert [h.message.content for h in hits.items] == ["rome hotel"]
    assert len(sent) == (3 if memory._db.is_sqlite else 2), [s.sql.sqlite[:40] for s in sent]
    assert (await alice.search_messages("paris", conversation_id=conv.id, history_id=run.id)).items == []
    with pytest.raises(ConversationNotFound):
        await bob.search_messages("hotel", conversation_id=conv.id)
    with pytest.raises(HistoryNotFound):
        await bob.search_messages("hotel", history_id=run.id)
    with pytest.raises(InvalidInputError):
        await alice.search_messages("hotel", conversation_id=other.id, history_id=run.id)
    with pytest.raises(ConversationNotFound):
        await alice.search_messages("", conversation_id=uuid.uuid4())
