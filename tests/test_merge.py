"""``merge_and_append`` (metadata set in the same transaction as an append, with an optimistic
check) and ``get_tail`` (a conversation's newest messages, by count and by time)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from chatmemory import (
    ChatMemory,
    ConflictError,
    ConversationNotFound,
    HistoryNotFound,
    InvalidInputError,
    Principal,
)
from chatmemory import _sql as sql
from chatmemory._merge import _tail
from chatmemory._plan import Stmt
from chatmemory.scope import Scope
from tests.conftest import _create_database
from tests.transactions import committed_before_messages


async def test_metadata_and_messages_are_written_together(alice: Scope) -> None:
    conv = await alice.start_conversation(metadata={"keep": 1, "change": 1})
    other = await alice.start_conversation(metadata={"x": 0})
    run = await alice.start_history(conv.id, model="m")
    when = datetime(2001, 2, 3, 4, 5, 6, 789, tzinfo=UTC)

    (message,) = await alice.merge_and_append(
        {conv.id: {"change": 2, "new": [1]}, other.id: {"x": 1}},
        history_id=run.id,
        messages=[{"role": "user", "content": "hi"}],
        created_at=when,
        if_last_seq=0,
    )

    assert message.seq == 1
    assert message.created_at == when
    assert (await alice.get_message(message.id)).created_at == when
    assert (await alice.get_conversation(conv.id)).metadata == {"keep": 1, "change": 2, "new": [1]}
    assert (await alice.get_conversation(other.id)).metadata == {"x": 1}


async def test_the_same_call_made_again_answers_what_it_stored_and_sets_no_metadata(alice: Scope) -> None:
    """A call whose messages' keys are all stored already (a retry, a re-delivered event) is a
    replay: it must not set its metadata again over what later calls set, nor touch the
    conversation. A call with one new message among stored ones is not: it writes everything."""
    conv = await alice.start_conversation()
    other = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    first = [{"role": "user", "content": "a", "key": "e1"}]
    (stored,) = await alice.merge_and_append(
        {conv.id: {"k": 1}, other.id: {"k": 1}}, history_id=run.id, messages=first, if_last_seq=0
    )
    await alice.merge_and_append(
        {conv.id: {"k": 2}, other.id: {"k": 2}},
        history_id=run.id,
        messages=[{"role": "user", "content": "b", "key": "e2"}],
        if_last_seq=1,
    )
    before = await alice.get_conversation(conv.id), await alice.get_conversation(other.id)

    assert await alice.merge_and_append(
        {conv.id: {"k": 1}, other.id: {"k": 1}}, history_id=run.id, messages=first, if_last_seq=2
    ) == [stored]

    assert (await alice.get_conversation(conv.id), await alice.get_conversation(other.id)) == before
    (again, third) = await alice.merge_and_append(
        {other.id: {"k": 3}},
        history_id=run.id,
        messages=[*first, {"role": "user", "content": "c", "key": "e3"}],
        if_last_seq=2,
    )
    assert (again, third.seq) == (stored, 3)
    assert (await alice.get_conversation(other.id)).metadata == {"k": 3}
    assert [m.key for m in await alice.transcript(conv.id)] == ["e1", "e2", "e3"]


async def test_metadata_alone(alice: Scope) -> None:
    conv = await alice.start_conversation(metadata={"a": 1})
    assert await alice.merge_and_append({conv.id: {"b": 2}}) == []
    assert (await alice.get_conversation(conv.id)).metadata == {"a": 1, "b": 2}


async def test_an_outdated_writer_writes_nothing(alice: Scope) -> None:
    conv = await alice.start_conversation(metadata={"v": 0})
    run = await alice.start_history(conv.id, model="m")
    await alice.merge_and_append(
        {conv.id: {"v": 1}}, history_id=run.id, messages=[{"role": "user", "content": "a"}]
    )

    with pytest.raises(ConflictError):
        await alice.merge_and_append(
            {conv.id: {"v": 2}}, history_id=run.id, messages=[{"role": "user", "content": "b"}], if_last_seq=0
        )

    assert (await alice.get_conversation(conv.id)).metadata == {"v": 1}
    assert [m.content for m in await alice.transcript(conv.id)] == ["a"]


async def test_a_target_not_visible_undoes_everything(alice: Scope, bob: Scope) -> None:
    conv = await alice.start_conversation(metadata={"v": 0})
    run = await alice.start_history(conv.id, model="m")
    bobs = await bob.start_conversation(metadata={"b": 0})

    with pytest.raises(ConversationNotFound):
        await alice.merge_and_append(
            {conv.id: {"v": 1}, bobs.id: {"b": 1}},
            history_id=run.id,
            messages=[{"role": "user", "content": "x"}],
        )

    assert (await alice.get_conversation(conv.id)).metadata == {"v": 0}
    assert await alice.transcript(conv.id) == []
    assert (await bob.get_conversation(bobs.id)).metadata == {"b": 0}


async def test_someone_elses_history_is_not_found(alice: Scope, bob: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    with pytest.raises(HistoryNotFound):
        await bob.merge_and_append({}, history_id=run.id, messages=[{"role": "user", "content": "x"}])
    assert await alice.transcript(conv.id) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "history_id"),
        ({"created_at": datetime(2020, 1, 1)}, "created_at"),
        ({"created_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))}, "created_at"),
        ({"if_last_seq": "3"}, "if_last_seq"),
        # The check is of the history's conversation: without one it would be skipped unseen.
        ({"if_last_seq": 5}, "if_last_seq"),
    ],
)
async def test_bad_input_is_refused(alice: Scope, kwargs: dict[str, object], field: str) -> None:
    conv = await alice.start_conversation(metadata={"v": 0})
    with pytest.raises(InvalidInputError) as caught:
        await alice.merge_and_append({conv.id: {"v": 1}}, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert (await alice.get_conversation(conv.id)).metadata == {"v": 0}


async def test_created_at_is_stored_and_answered_in_utc_whatever_its_offset_or_year(alice: Scope) -> None:
    """A time with another offset, or in a year before 1000, reads back as the same instant in
    UTC, and the append answers it as a read would."""
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    appended = []
    for when in (
        datetime(999, 5, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))),
    ):
        (message,) = await alice.merge_and_append(
            {}, history_id=run.id, messages=[{"role": "user", "content": "x"}], created_at=when
        )
        assert message.created_at == when and message.created_at.utcoffset() == timedelta(0)
        appended.append(message.model_dump_json())
    assert [m.model_dump_json() for m in await alice.transcript(conv.id)] == appended
    assert len((await alice.get_tail(conv.id, since=datetime(500, 1, 1, tzinfo=UTC))).messages) == 2


async def test_a_time_out_of_range_in_utc_is_refused(alice: Scope) -> None:
    conv = await alice.start_conversation()
    with pytest.raises(InvalidInputError) as caught:
        await alice.get_tail(conv.id, since=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))
    assert caught.value.field == "since"


async def test_metadata_must_map_ids_to_objects(alice: Scope) -> None:
    conv = await alice.start_conversation()
    with pytest.raises(InvalidInputError):
        await alice.merge_and_append({conv.id: "not an object"})  # type: ignore[dict-item]
    with pytest.raises(InvalidInputError):
        await alice.merge_and_append({"not-an-id": {}})


async def test_tail_by_count_and_time(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    start = datetime(2020, 1, 1, tzinfo=UTC)
    for i in range(5):
        await alice.merge_and_append(
            {},
            history_id=run.id,
            messages=[{"role": "user", "content": str(i)}],
            created_at=start + timedelta(seconds=i),
        )

    def texts(tail: object) -> list[str]:
        return [m.content for m in tail.messages]  # type: ignore[attr-defined]

    full = await alice.get_tail(conv.id)
    assert texts(full) == ["0", "1", "2", "3", "4"]
    assert full.last_seq == 5
    assert full.conversation.id == conv.id
    assert texts(await alice.get_tail(conv.id, limit=2)) == ["3", "4"]
    assert texts(await alice.get_tail(conv.id, limit=0)) == []
    assert texts(await alice.get_tail(conv.id, since=start + timedelta(seconds=3))) == ["3", "4"]
    assert texts(await alice.get_tail(conv.id, since=start + timedelta(seconds=2), limit=1)) == ["4"]
    assert texts(await alice.get_tail(conv.id, since=start + timedelta(days=1))) == []


@pytest.mark.parametrize("limit", [None, 2])
async def test_tail_never_answers_a_message_its_last_seq_does_not_count(
    db_url: str, memory: ChatMemory, alice: Scope, limit: int | None
) -> None:
    """An append committed by another store while the tail is read (on SQLite between its two
    statements, in the read's one snapshot): the tail is the conversation before it or after
    it, never its messages with counters that do not count them, so a caller that writes with
    ``if_last_seq=tail.last_seq`` has seen every message that counts."""
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [{"role": "user", "content": str(i)} for i in range(3)])
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))
        with committed_before_messages(
            memory, lambda: other.append_messages(run.id, [{"role": "user", "content": "late"}])
        ) as done:
            tail = await alice.get_tail(conv.id, limit=limit)
        assert done  # it did commit while the tail was read
    n = limit or 4
    read = ([m.content for m in tail.messages], [m.seq for m in tail.messages], tail.last_seq)
    before = (["0", "1", "2"][-n:], [1, 2, 3][-n:], 3)
    after = (["0", "1", "2", "late"][-n:], [1, 2, 3, 4][-n:], 4)
    assert read in (before, after)
    assert tail.conversation.message_count == tail.last_seq
    later = await alice.get_tail(conv.id, limit=limit)
    assert (later.last_seq, [m.content for m in later.messages][-1]) == (4, "late")


async def test_tail_is_one_statement_on_postgresql(memory: ChatMemory, alice: Scope) -> None:
    """PostgreSQL reads the conversation and its messages in one statement, its one snapshot (a
    reader's statements each take their own there); SQLite in two, inside the read's one."""
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [{"role": "user", "content": str(i)} for i in range(3)])
    sent: list[Stmt] = []
    memory._db.set_trace(sent.append)
    try:
        tails = [await alice.get_tail(conv.id, limit=n) for n in (None, 2, 0)]
    finally:
        memory._db.set_trace(None)
    assert [[m.content for m in t.messages] for t in tails] == [["0", "1", "2"], ["1", "2"], []]
    assert len(sent) == (5 if memory._db.is_sqlite else 3)  # SQLite reads no message for limit=0
    with pytest.raises(ConversationNotFound):
        await alice.get_tail(UUID(int=1))


@pytest.mark.parametrize("limit", [None, 10])
async def test_tail_read_across_a_deletion_agrees_with_its_count(
    db_url: str, memory: ChatMemory, alice: Scope, limit: int | None
) -> None:
    """A message deleted by another store while the tail is read (on SQLite between its two
    statements, in the read's one snapshot): its messages are the ones its count counts."""
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    appended = await alice.append_messages(run.id, [{"role": "user", "content": str(i)} for i in range(4)])
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))
        with committed_before_messages(memory, lambda: other.delete_message(appended[-1].id)) as done:
            tail = await alice.get_tail(conv.id, limit=limit)
        assert done
    # Before the deletion (SQLite's one snapshot) or after it, never a mix of the two.
    read = ([m.content for m in tail.messages], tail.conversation.message_count, tail.last_seq)
    assert read in ((["0", "1", "2", "3"], 4, 4), (["0", "1", "2"], 3, 4))


async def test_tail_of_someone_elses_conversation_is_not_found(alice: Scope, bob: Scope) -> None:
    conv = await alice.start_conversation()
    with pytest.raises(ConversationNotFound):
        await bob.get_tail(conv.id)
    with pytest.raises(InvalidInputError):
        await alice.get_tail(conv.id, limit=-1)


async def test_writers_targeting_each_others_conversations_both_succeed(postgres_url: str) -> None:
    """Two calls at once, each appending to its own conversation and setting metadata in the
    other's, both succeed (PostgreSQL). Each is held just before it locks the other's
    conversation, so both have taken whatever they lock first: locked in one order, the second
    waits for the first; locked own-first, each would wait for the other (a deadlock, which
    PostgreSQL ends by failing one)."""
    url = await _create_database(postgres_url)
    first, second = await ChatMemory.open(url), await ChatMemory.open(url)
    try:
        chat = first.scoped(Principal("alice"))
        low, high = sorted([(await chat.start_conversation()).id for _ in range(2)])
        runs = {cid: await chat.start_history(cid, model="m") for cid in (low, high)}
        reached = [threading.Event(), threading.Event()]
        go = threading.Event()

        def hold(index: int, target: UUID) -> Callable[[Stmt], None]:
            def trace(stmt: Stmt) -> None:
                params = stmt.params if isinstance(stmt.params, dict) else {}
                if "FOR UPDATE" in stmt.sql.postgres and params.get("cid") == target:
                    reached[index].set()
                    go.wait(30)

            return trace

        first._db.set_trace(hold(0, high))
        second._db.set_trace(hold(1, low))
        calls = [
            asyncio.ensure_future(
                memory.scoped(Principal("alice")).merge_and_append(
                    {target: {"from": str(own)}},
                    history_id=runs[own].id,
                    messages=[{"role": "user", "content": f"in {own}"}],
                )
            )
            for memory, own, target in ((first, low, high), (second, high, low))
        ]
        for event in reached:
            await asyncio.to_thread(event.wait, 30)
        go.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert not [r for r in results if isinstance(r, BaseException)], results
        for own, target in ((low, high), (high, low)):
            assert (await chat.get_conversation(target)).metadata == {"from": str(own)}
            assert [m.content for m in await chat.transcript(own)] == [f"in {own}"]
    finally:
        go.set()
        await first.close()
        await second.close()


def _run_tail_plan(rows: list[tuple[object, ...]]) -> tuple[object, list[object]]:
    """``_tail``'s PostgreSQL plan answered with ``rows`` as its one statement's result."""
    plan = _tail(Principal("alice"), UUID(int=7), None, None, one_statement=True)
    stmt = next(plan)
    assert "UNION ALL" in stmt.sql.postgres
    with pytest.raises(StopIteration) as done:
        plan.send(rows)
    return done.value.value  # type: ignore[no-any-return]


@pytest.mark.parametrize("at", [0, 1, 2, 3])
def test_tail_finds_the_conversation_row_wherever_it_comes(at: int) -> None:
    """The conversation's row (no message id) is taken out of the statement's rows wherever it
    comes; the message rows keep their order and lose the conversation's columns."""
    width = sql.MESSAGE_COLUMNS
    conversation = (None,) * width + tuple(f"c{i}" for i in range(12))
    messages = [tuple(f"m{n}.{i}" for i in range(width)) + (None,) * 12 for n in (3, 2, 1)]
    rows = [*messages[:at], conversation, *messages[at:]]
    row, found = _run_tail_plan(rows)
    assert row == conversation[width:]
    assert found == [m[:width] for m in messages]


def test_tail_without_the_conversation_row_is_not_found() -> None:
    """Message rows without the conversation's row (never sent; the statement reads messages
    only of a visible conversation) answer ConversationNotFound, not the messages."""
    width = sql.MESSAGE_COLUMNS
    with pytest.raises(ConversationNotFound):
        _run_tail_plan([tuple(f"m{i}" for i in range(width)) + (None,) * 12])
    with pytest.raises(ConversationNotFound):
        _run_tail_plan([])
