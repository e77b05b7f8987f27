"""Messages: order, atomic batches, idempotent keys, provenance, parts, status, listing."""

from __future__ import annotations

import gc
from datetime import timedelta
from uuid import UUID

import pytest
from sqlalchemy import Uuid, bindparam, text

from chatmemory import (
    ChatMemory,
    ConflictError,
    HistoryNotFound,
    ImagePart,
    InvalidInputError,
    Message,
    MessageNotFound,
    NewMessage,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.scope import Scope


async def _run(chat: Scope, model: str = "gpt-4.1") -> tuple[object, object]:
    conv = await chat.start_conversation("t")
    return conv.id, (await chat.start_history(conv.id, model=model)).id


async def test_seq_is_consecutive_per_conversation_across_histories(alice: Scope) -> None:
    cid, first = await _run(alice)
    a = await alice.append_messages(first, [NewMessage("user", str(i)) for i in range(3)])
    await alice.finish_history(first)
    second = (await alice.start_history(cid, model="other")).id
    b = await alice.append_messages(second, [NewMessage("user", "3"), NewMessage("assistant", "4")])
    assert [m.seq for m in a + b] == [1, 2, 3, 4, 5]
    assert [m.content for m in await alice.transcript(cid)] == ["0", "1", "2", "3", "4"]
    assert {m.conversation_id for m in a + b} == {cid}


async def test_what_a_message_leaves_out_is_stored_null(memory: ChatMemory, alice: Scope) -> None:
    """Columns a message leaves out are NULL in the table, as SQL written by hand expects (the
    SQLite insert sends them as empty text, which the statement turns into NULL), and what it
    gives is stored as given, in one batch with messages that give nothing."""
    cid, hid = await _run(alice, model="gpt-4.1")
    everything = NewMessage(
        "assistant",
        [TextPart(text="see"), ImagePart(url="https://example.com/a.png")],
        model="claude-x",
        usage={"output_tokens": 3},
        metadata={"m": 1},
        key="k-1",
    )
    await alice.append_messages(hid, [NewMessage("user", "hi"), everything, NewMessage("assistant", "ok")])
    query = text(
        "SELECT role, parts IS NULL, model, usage IS NULL, metadata IS NULL, native IS NULL, key "
        "FROM chat_messages WHERE chat_conversation_id = :cid ORDER BY seq"
    ).bindparams(bindparam("cid", type_=Uuid()))
    async with memory.engine.connect() as conn:
        rows = [tuple(row) for row in await conn.execute(query, {"cid": cid})]
    assert rows == [
        ("user", True, None, True, True, True, None),
        ("assistant", False, "claude-x", False, False, True, "k-1"),
        ("assistant", True, "gpt-4.1", True, True, True, None),
    ]
    user, given, plain = await alice.transcript(cid)
    assert (user.parts, user.model, user.usage, user.metadata, user.key) == (None, None, None, None, None)
    assert (given.parts, given.usage, given.metadata, given.key) == (
        everything.parts,
        {"output_tokens": 3},
        {"m": 1},
        "k-1",
    )
    assert (plain.model, plain.key) == ("gpt-4.1", None)


async def test_provenance(alice: Scope) -> None:
    cid, hid = await _run(alice, model="gpt-4.1")
    stored = await alice.append_messages(
        hid,
        [
            NewMessage("system", "rules"),
            NewMessage("user", "hi"),
            NewMessage("assistant", "default model"),
            NewMessage("assistant", "fallback", model="claude-x"),
            {"role": "tool", "content": [{"type": "tool_result", "call_id": "c", "content": "ok"}]},
        ],
    )
    assert [m.model for m in stored] == [None, None, "gpt-4.1", "claude-x", None]
    reread = await alice.transcript(cid)
    assert [m.model for m in reread] == [m.model for m in stored]
    for role in ("user", "system", "tool"):
        with pytest.raises(InvalidInputError) as err:
            await alice.append_messages(hid, [{"role": role, "content": "x", "model": "gpt"}])
        assert err.value.field == "messages.0.model"
    with pytest.raises(InvalidInputError) as err:
        await alice.start_history(cid, model="  ")
    assert err.value.field == "model"


async def test_parts_are_kept_and_content_flattened(alice: Scope) -> None:
    cid, hid = await _run(alice)
    parts = [
        TextPart(text="look at this"),
        ImagePart(url="https://example.com/cat.png"),
        ImagePart(data="aGVsbG8=", media_type="image/png"),
    ]
    call = [TextPart(text="checking"), ToolCallPart(id="call_1", name="weather", arguments={"city": "Oslo"})]
    result = [ToolResultPart(call_id="call_1", content="-3C")]
    native = {"format": "test", "data": {"raw": [1, {"a": None}]}}
    stored = await alice.append_messages(
        hid,
        [
            NewMessage("user", parts),
            NewMessage("assistant", call, usage={"output_tokens": 5}, metadata={"k": "v"}, native=native),
            NewMessage("tool", result),
            NewMessage("assistant", "plain"),
        ],
    )
    assert [m.content for m in stored] == ["look at this", "checking", "-3C", "plain"]
    reread = await alice.transcript(cid)
    assert reread == stored
    assert reread[0].parts == parts and reread[3].parts is None
    assert reread[1].native is not None and reread[1].native.data == {"raw": [1, {"a": None}]}
    assert reread[1].usage == {"output_tokens": 5} and reread[1].metadata == {"k": "v"}
    # Read back without validation, every message is what validating its fields would give.
    page = await alice.list_messages(conversation_id=cid)
    for message in [*stored, *reread, *page.items, await alice.get_message(stored[1].id)]:
        assert Message.model_validate(message.model_dump()) == message
        assert isinstance(message.id, UUID)
        assert message.created_at.utcoffset() == timedelta(0)
        assert message.model_fields_set == set(Message.model_fields)


async def test_long_reads_leave_the_collector_as_they_found_it(alice: Scope) -> None:
    """A transcript long enough to be read with the collector paused resumes it only if it was on."""
    cid, hid = await _run(alice)
    await alice.append_messages(hid, [{"role": "user", "content": str(i)} for i in range(1000)])
    assert gc.isenabled()
    assert len(await alice.transcript(cid)) == 1000
    assert gc.isenabled()
    gc.disable()
    try:
        assert len(await alice.transcript(cid)) == 1000
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_idempotent_keys(alice: Scope) -> None:
    cid, hid = await _run(alice)
    first = await alice.append_messages(hid, [{"role": "user", "content": "a", "key": "k1"}])
    again = await alice.append_messages(
        hid,
        [{"role": "user", "content": "a", "key": "k1"}, {"role": "assistant", "content": "b", "key": "k2"}],
    )
    assert again[0] == first[0]
    assert again[1].seq == 2
    assert [m.content for m in await alice.transcript(cid)] == ["a", "b"]
    assert (await alice.get_conversation(cid)).message_count == 2
    with pytest.raises(InvalidInputError):
        await alice.append_messages(hid, [{"role": "user", "content": "x", "key": "d"}] * 2)


async def test_batch_is_all_or_nothing(alice: Scope) -> None:
    cid, hid = await _run(alice)
    good = {"role": "user", "content": "fine"}
    for bad in ({"role": "robot", "content": "x"}, {"role": "user", "content": [{"type": "video"}]}):
        with pytest.raises(InvalidInputError) as err:
            await alice.append_messages(hid, [good, good, bad])
        assert err.value.field is not None and err.value.field.startswith("messages.2")
    assert await alice.transcript(cid) == []


async def test_finished_history_is_closed(alice: Scope) -> None:
    _, hid = await _run(alice)
    done = await alice.finish_history(hid, status="failed", usage={"input_tokens": 3}, error="boom")
    assert done.status == "failed" and done.error == "boom" and done.finished_at is not None
    assert (await alice.get_history(hid)).usage == {"input_tokens": 3}
    with pytest.raises(ConflictError):
        await alice.append_messages(hid, [NewMessage("user", "late")])
    with pytest.raises(ConflictError):
        await alice.finish_history(hid)
    _, other = await _run(alice)
    with pytest.raises(InvalidInputError):
        await alice.finish_history(other, status="running")  # type: ignore[arg-type]


async def test_pending_messages(alice: Scope) -> None:
    cid, hid = await _run(alice, model="gpt-a")
    (placeholder, later) = await alice.append_messages(
        hid, [NewMessage("assistant", "", status="pending"), NewMessage("assistant", "", status="pending")]
    )
    done = await alice.complete_message(placeholder.id, content="the answer", model="gpt-b")
    assert (done.status, done.content, done.model) == ("complete", "the answer", "gpt-b")
    assert await alice.get_message(placeholder.id) == done
    failed = await alice.fail_message(later.id, error="timeout")
    assert (failed.status, failed.error) == ("error", "timeout")
    assert await alice.get_message(later.id) == failed
    with pytest.raises(ConflictError):
        await alice.complete_message(placeholder.id, content="again")
    with pytest.raises(ConflictError):
        await alice.fail_message(later.id, error="again")
    (user,) = await alice.append_messages(hid, [NewMessage("user", "", status="pending")])
    with pytest.raises(InvalidInputError):
        await alice.complete_message(user.id, content="x", model="gpt")
    assert (await alice.get_message(user.id)).status == "pending"
    assert (await alice.get_conversation(cid)).last_message_preview == ""


async def test_list_messages_cursors_both_ways(alice: Scope) -> None:
    cid, hid = await _run(alice)
    await alice.append_messages(hid, [NewMessage("user", str(i)) for i in range(10)])
    await alice.finish_history(hid)
    other = (await alice.start_history(cid, model="m")).id
    await alice.append_messages(other, [NewMessage("user", str(i)) for i in range(10, 13)])

    async def walk(**kw: object) -> list[str]:
        out, cursor = [], None
        while True:
            page = await alice.list_messages(limit=4, cursor=cursor, **kw)  # type: ignore[arg-type]
            out += [m.content for m in page.items]
            if not page.has_more:
                return out
            cursor = page.next_cursor

    assert await walk(conversation_id=cid) == [str(i) for i in range(13)]
    assert await walk(conversation_id=cid, newest_first=True) == [str(i) for i in reversed(range(13))]
    assert await walk(history_id=hid) == [str(i) for i in range(10)]
    assert await walk(history_id=other, newest_first=True) == ["12", "11", "10"]
    forward = (await alice.list_messages(conversation_id=cid, limit=2)).next_cursor
    with pytest.raises(InvalidInputError):
        await alice.list_messages(conversation_id=cid, cursor=forward, newest_first=True)
    with pytest.raises(InvalidInputError):
        await alice.list_messages()
    other_conv, _ = await _run(alice)
    with pytest.raises(InvalidInputError):
        await alice.list_messages(conversation_id=other_conv, history_id=hid)


async def test_delete_message_and_history_update_summary(alice: Scope) -> None:
    cid, hid = await _run(alice)
    msgs = await alice.append_messages(hid, [NewMessage("user", "a"), NewMessage("assistant", "b")])
    await alice.delete_message(msgs[1].id)
    summary = (await alice.list_conversations()).items[0]
    assert (summary.message_count, summary.last_message_preview) == (1, "a")
    with pytest.raises(MessageNotFound):
        await alice.get_message(msgs[1].id)
    assert [m.id for m in await alice.transcript(cid)] == [msgs[0].id]
    await alice.delete_history(hid)
    with pytest.raises(HistoryNotFound):
        await alice.get_history(hid)
    summary = (await alice.list_conversations()).items[0]
    assert (summary.message_count, summary.last_message_preview) == (0, None)
    assert (await alice.get_conversation(cid)).histories == []
    assert (await alice.list_messages(conversation_id=cid)).items == []


async def test_deleted_keyed_message_is_never_returned(alice: Scope) -> None:
    cid, hid = await _run(alice)
    (first,) = await alice.append_messages(hid, [{"role": "user", "content": "a", "key": "k"}])
    await alice.delete_message(first.id)
    (again,) = await alice.append_messages(hid, [{"role": "user", "content": "a again", "key": "k"}])
    assert again.id != first.id and again.content == "a again"
    assert [m.content for m in await alice.transcript(cid)] == ["a again"]
    (same,) = await alice.append_messages(hid, [{"role": "user", "content": "ignored", "key": "k"}])
    assert same == again


async def test_update_running_history(alice: Scope) -> None:
    _, hid = await _run(alice, model="first")
    (before,) = await alice.append_messages(hid, [NewMessage("assistant", "a")])
    updated = await alice.update_history(hid, model="second", system_prompts=["new"], metadata={"agent": "b"})
    assert (updated.model, updated.system_prompts, updated.metadata) == ("second", ["new"], {"agent": "b"})
    (after,) = await alice.append_messages(hid, [NewMessage("assistant", "b")])
    assert (before.model, after.model) == ("first", "second")
    assert (await alice.get_history(hid, messages=False)).model_dump(
        exclude={"messages"}
    ) == updated.model_dump()
    kept = await alice.update_history(hid, metadata=None)
    assert (kept.model, kept.metadata) == ("second", None)
    with pytest.raises(InvalidInputError):
        await alice.update_history(hid, model="")
    await alice.finish_history(hid)
    with pytest.raises(ConflictError):
        await alice.update_history(hid, model="third")


async def test_json_numbers_round_trip_exactly(alice: Scope) -> None:
    cid, hid = await _run(alice)
    numbers = {"big": 1e23, "tiny": 1e-20, "neg_zero": -0.0, "int": 10**20, "pi": 3.141592653589793}
    await alice.append_messages(hid, [{"role": "user", "content": "n", "metadata": numbers}])
    (stored,) = await alice.transcript(cid)
    assert stored.metadata == numbers
    assert [type(v) for v in (stored.metadata or {}).values()] == [type(v) for v in numbers.values()]


async def test_read_models_equal_validated_ones(alice: Scope) -> None:
    from chatmemory import ConversationSummary, History, Message

    cid, hid = await _run(alice)
    await alice.append_messages(
        hid,
        [
            NewMessage("user", [TextPart(text="a"), ImagePart(url="https://x/y.png")]),
            NewMessage("assistant", "b", native={"format": "f", "data": {"k": [1]}}, usage={"t": 1}),
        ],
    )
    messages = await alice.transcript(cid)
    assert len(messages) == 2
    for message in messages:
        assert Message.model_validate(message.model_dump()) == message
        assert Message.model_validate_json(message.model_dump_json()) == message
    history = await alice.get_history(hid, messages=False)
    assert set(history.model_dump()) == {*History.model_fields, "messages"}
    summary = (await alice.list_conversations()).items[0]
    assert ConversationSummary.model_validate(summary.model_dump()) == summary
    assert set(summary.model_dump()) == set(ConversationSummary.model_fields)
    run = await alice.finish_history(hid)
    assert set(run.model_dump()) == set(History.model_fields)


async def test_every_read_of_a_conversation_gives_messages_as_stored(alice: Scope) -> None:
    """Reads of one conversation's messages (which leave its id out of each row) give the very
    messages ``get_message`` does, each naming its own conversation, in a store of two."""
    stored: dict[object, list[Message]] = {}
    for title in ("one", "two"):
        cid, hid = await _run(alice)
        messages = await alice.append_messages(
            hid, [NewMessage("user", f"{title} q"), NewMessage("assistant", f"{title} a", usage={"t": 1})]
        )
        stored[cid] = [await alice.get_message(m.id) for m in messages]
    for cid, expected in stored.items():
        newest = await alice.list_messages(conversation_id=cid, newest_first=True)
        by_both = await alice.list_messages(conversation_id=cid, history_id=expected[0].history_id)
        detail = await alice.get_conversation(cid, messages=True)
        export = await alice.export_conversation(cid)
        reads = {
            "transcript": await alice.transcript(cid),
            "page": (await alice.list_messages(conversation_id=cid)).items,
            "newest page": newest.items[::-1],
            "page of a history": by_both.items,
            "tail": (await alice.get_tail(cid)).messages,
            "tail since": (await alice.get_tail(cid, since=expected[0].created_at)).messages,
            "detail": [m for h in detail.histories for m in h.messages or []],
            "context": (await alice.get_context(cid, max_tokens=1000)).messages,
        }
        for name, got in reads.items():
            assert got == expected, name
        exported = [m["id"] for h in export["histories"] for m in h["messages"]]
        assert exported == [str(m.id) for m in expected]


def _every_kind(tag: str, *, keyed: bool) -> list[NewMessage]:
    """Messages that between them fill or leave empty every column an append writes."""
    key = (lambda n: f"{tag}{n}") if keyed else (lambda n: None)
    call = ToolCallPart(id="c1", name="lookup", arguments={"q": tag})
    return [
        NewMessage("system", f"{tag} rules", key=key(0)),
        NewMessage("user", [TextPart(text=f"{tag} see"), ImagePart(url="https://x/i.png")], key=key(1)),
        NewMessage("assistant", [call], usage={}, metadata={}, key=key(2)),  # the history's model
        NewMessage("assistant", "", model="other", status="pending", usage={"t": 1}, key=key(3)),
        NewMessage("tool", "42", metadata={"n": [1, None]}, native={"format": "f", "data": {}}, key=key(4)),
    ]


async def test_an_append_answers_every_column_as_it_reads_back(alice: Scope) -> None:
    """With keys and without (each its own way of storing a batch), every column of each message
    reads back as the append answered it: the history's model for an assistant message without
    one and no model for others, an empty usage or metadata as empty (not absent), parts, the
    native form, the key, and an ``updated_at`` that is the ``created_at`` of a message never
    changed."""
    cid, hid = await _run(alice, model="gpt-h")
    answered = await alice.append_messages(hid, _every_kind("a", keyed=False))
    answered += await alice.append_messages(hid, _every_kind("k", keyed=True))
    assert [m.model for m in answered[:5]] == [None, None, "gpt-h", "other", None]
    assert [(m.usage, m.metadata) for m in answered[2:4]] == [({}, {}), ({"t": 1}, None)]
    assert all(m.updated_at == m.created_at for m in answered)
    assert await alice.transcript(cid) == answered
    assert [await alice.get_message(m.id) for m in answered] == answered
    assert (await alice.list_messages(history_id=hid, limit=20)).items == answered


class _Summarized(NewMessage):
    """A message class of an application's own, whose ``text`` is not its content flattened."""

    @property
    def text(self) -> str:
        return f"[{self.role}] {super().text}"


async def test_a_subclass_text_is_what_is_stored_and_answered(alice: Scope) -> None:
    """A subclass of ``NewMessage`` is stored as its ``text`` says, on either backend, and the
    append answers what the store then reads back (the conversation's preview included)."""
    cid, hid = await _run(alice)
    answered = await alice.append_messages(hid, [_Summarized("user", "hi"), NewMessage("user", "plain")])
    answered += await alice.append_messages(hid, [_Summarized("user", [TextPart(text="a")], key="k")])
    assert [m.content for m in answered] == ["[user] hi", "plain", "[user] a"]
    assert answered[2].parts == [TextPart(text="a")]
    assert await alice.transcript(cid) == answered
    assert (await alice.list_conversations()).items[0].last_message_preview == "[user] a"


async def test_a_long_transcript_is_every_message_as_stored(alice: Scope) -> None:
    """A whole conversation's or history's messages, read in one statement, are each as a page
    or ``get_message`` reads it, whatever it holds, whichever history it is in and whenever it
    changed, in a transcript, a conversation's detail and a history's."""
    conv = await alice.start_conversation("long")
    appended: list[Message] = []
    for h in range(2):
        history = await alice.start_history(conv.id, model=f"model-{h}")
        for batch in range(6):
            appended += await alice.append_messages(
                history.id,
                [
                    NewMessage(
                        "assistant" if i % 2 else "user",
                        [TextPart(text=f"{h}.{batch}.{i}"), ImagePart(url="https://example.com/i.png")]
                        if i % 7 == 0
                        else f"{h}.{batch}.{i}",
                        usage={"n": i} if i % 5 == 0 else None,
                        metadata={"i": [i, None]} if i % 3 == 0 else None,
                        native={"format": "f", "data": {"i": i}} if i % 4 == 0 else None,
                        key=f"k{h}.{batch}.{i}" if i % 2 else None,
                        status="pending" if i == 49 else "complete",
                    )
                    for i in range(50)
                ],
            )
        await alice.finish_history(history.id)
    pending = [m for m in appended if m.status == "pending"]
    completed = [await alice.complete_message(m.id, content="done") for m in pending]
    await alice.delete_message(appended[300].id)
    transcript = await alice.transcript(conv.id)
    paged: list[Message] = []
    cursor = None
    while True:
        page = await alice.list_messages(conversation_id=conv.id, limit=100, cursor=cursor)
        paged += page.items
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert len(transcript) == 599
    assert transcript == paged
    assert [m.seq for m in transcript] == [m.seq for m in appended if m.seq != appended[300].seq]
    assert {m.history_id for m in transcript[250:520]} == {m.history_id for m in appended[250:520]}
    for message in transcript[250:262] + transcript[508:518]:
        assert message == await alice.get_message(message.id)
    changed = {m.id: m for m in completed}
    for message in transcript:
        assert message.updated_at >= message.created_at
        assert (message.updated_at > message.created_at) == (message.id in changed)
        if message.id in changed:
            assert message == changed[message.id]
    detail = await alice.get_conversation(conv.id, messages=True)
    assert [m for h in detail.histories for m in h.messages or []] == transcript
    for history_detail in detail.histories:
        assert (await alice.get_history(history_detail.id)).messages == history_detail.messages
