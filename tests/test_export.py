"""Export and import of whole conversations, JSON Lines, and purging soft-deleted data."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from chatmemory import (
    ChatMemory,
    ConflictError,
    ConversationNotFound,
    ImagePart,
    InvalidInputError,
    NewMessage,
    Principal,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory._export import FORMAT_VERSION, dump_line, read_lines
from chatmemory._validation import MAX_JSON_DEPTH
from chatmemory.scope import Scope


async def _rich_conversation(scope: Scope) -> str:
    conv = await scope.start_conversation("Export me", metadata={"app": "demo", "n": [1, 2.5, None]})
    first = await scope.start_history(
        conv.id, model="gpt-4.1", system_prompts=["Be brief."], metadata={"run": 1}
    )
    await scope.append_messages(
        first.id,
        [
            NewMessage("system", "You are helpful."),
            NewMessage(
                "user",
                [TextPart(text="Look"), ImagePart(data="iVBORw0KGgo=", media_type="image/png")],
                metadata={"client": "web"},
                key="u1",
            ),
            NewMessage(
                "assistant",
                [TextPart(text="Calling"), ToolCallPart(id="c1", name="f", arguments={"x": 1})],
                usage={"output_tokens": 7},
                native={
                    "format": "openai.chat_completions",
                    "data": {"role": "assistant", "content": "Calling"},
                },
            ),
            NewMessage("tool", [ToolResultPart(call_id="c1", content="done", is_error=True)]),
        ],
    )
    await scope.finish_history(first.id, status="failed", usage={"input_tokens": 12}, error="tool failed")
    second = await scope.start_history(conv.id, model="claude-sonnet")
    _, failed, _ = await scope.append_messages(
        second.id,
        [
            NewMessage("assistant", "", status="pending"),
            NewMessage("assistant", "", status="pending", model="other-model"),
            NewMessage("user", "still here"),
        ],
    )
    await scope.fail_message(failed.id, error="timeout")
    await scope.update_conversation(conv.id, pinned=True, archived=True)
    return str(conv.id)


def _without_ids(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    del doc["conversation"]["id"]
    for history in doc["histories"]:
        del history["id"]
        for message in history["messages"]:
            del message["id"]
    return doc


async def test_export_holds_everything(alice: Scope) -> None:
    cid = await _rich_conversation(alice)
    doc = await alice.export_conversation(cid)
    assert doc["format_version"] == FORMAT_VERSION
    assert json.loads(json.dumps(doc)) == doc
    assert doc["conversation"]["id"] == cid
    assert doc["conversation"]["title"] == "Export me"
    assert doc["conversation"]["pinned_at"] is not None
    first, second = doc["histories"]
    assert (first["status"], first["error"], first["usage"]) == (
        "failed",
        "tool failed",
        {"input_tokens": 12},
    )
    assert first["system_prompts"] == ["Be brief."]
    assert first["finished_at"] is not None
    assert [m["seq"] for m in first["messages"] + second["messages"]] == [1, 2, 3, 4, 5, 6, 7]
    user = first["messages"][1]
    assert user["parts"] == [
        {"type": "text", "text": "Look"},
        {"type": "image", "data": "iVBORw0KGgo=", "media_type": "image/png"},
    ]
    assert (user["key"], user["metadata"]) == ("u1", {"client": "web"})
    assert first["messages"][2]["native"]["format"] == "openai.chat_completions"
    assert first["messages"][2]["usage"] == {"output_tokens": 7}
    assert [m["status"] for m in second["messages"]] == ["pending", "error", "complete"]
    assert second["messages"][1]["error"] == "timeout"


async def test_round_trip_with_new_ids_is_identical(alice: Scope) -> None:
    cid = await _rich_conversation(alice)
    doc = await alice.export_conversation(cid)
    with pytest.raises(ConflictError):
        await alice.import_conversation(doc)
    copy_ = await alice.import_conversation(doc, new_ids=True)
    assert str(copy_.id) != cid
    again = await alice.export_conversation(copy_.id)
    assert _without_ids(again) == _without_ids(doc)
    detail = await alice.get_conversation(copy_.id, messages=True)
    assert detail.message_count == 7
    assert detail.histories[0].status == "failed"
    with pytest.raises(ConflictError):
        await alice.append_messages(detail.histories[0].id, [NewMessage("user", "closed")])
    run = detail.histories[1]
    assert run.messages is not None
    await alice.complete_message(run.messages[0].id, content="finished after import")
    assert (await alice.search_messages("finished import")).items[0].conversation_id == copy_.id
    stored = await alice.append_messages(run.id, [NewMessage("user", "next")])
    assert stored[0].seq == 8


async def test_import_keeps_ids_into_another_store(memory: ChatMemory, alice: Scope, tmp_path: Any) -> None:
    cid = await _rich_conversation(alice)
    doc = await alice.export_conversation(cid)
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'other.db'}") as other:
        bob = other.scoped(Principal("bob", tenant="t2"))
        imported = await bob.import_conversation(doc)
        assert str(imported.id) == cid
        assert (imported.owner_id, imported.tenant_id) == ("bob", "t2")
        again = await bob.export_conversation(cid)
    assert again["histories"] == doc["histories"]
    assert {**again["conversation"], "owner_id": "alice", "tenant_id": None} == doc["conversation"]


async def test_concurrent_imports_of_one_document_store_it_once(bob: Scope, tmp_path: Any) -> None:
    """Imports keeping ids, racing: one stores the document, every other is a ConflictError
    (as for an import after it), never a storage error, and nothing is stored twice."""
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'source.db'}") as source:
        elsewhere = source.scoped(Principal("alice"))
        cid = await _rich_conversation(elsewhere)
        doc = await elsewhere.export_conversation(cid)
    results = await asyncio.gather(*(bob.import_conversation(doc) for _ in range(6)), return_exceptions=True)
    stored = [r for r in results if not isinstance(r, BaseException)]
    assert len(stored) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException)), results
    assert (await bob.export_conversation(cid))["histories"] == doc["histories"]


async def test_owner_needs_admin(memory: ChatMemory, alice: Scope, admin: Scope, bob: Scope) -> None:
    cid = await _rich_conversation(alice)
    doc = await alice.export_conversation(cid)
    with pytest.raises(InvalidInputError):
        await alice.import_conversation(doc, owner="bob", new_ids=True)
    for owner in ["b\x00b", "\ud800", ""]:
        with pytest.raises(InvalidInputError):
            await admin.import_conversation(doc, owner=owner, new_ids=True)
    copied = await admin.import_conversation(doc, owner="bob", new_ids=True)
    assert copied.owner_id == "bob"
    assert [c.id for c in (await bob.list_conversations(archived=None)).items] == [copied.id]


async def test_export_is_scoped(alice: Scope, bob: Scope) -> None:
    cid = await _rich_conversation(alice)
    with pytest.raises(ConversationNotFound):
        await bob.export_conversation(cid)
    assert [doc async for doc in bob.export_conversations()] == []
    await alice.start_conversation("second")
    gone = await alice.start_conversation("deleted")
    await alice.delete_conversation(gone.id)
    titles = [doc["conversation"]["title"] async for doc in alice.export_conversations()]
    assert titles == ["Export me", "second"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(format_version=2),
        lambda d: d.pop("format_version"),
        lambda d: d.update(extra=1),
        lambda d: d["histories"][0]["messages"][0].update(seq=2),
        lambda d: d["histories"][0]["messages"][0].update(role="robot"),
        lambda d: d["histories"][0]["messages"][1].update(content="not the parts"),
        lambda d: d["histories"][0]["messages"][0].update(model="m"),
        lambda d: d["histories"][0]["messages"][0].update(created_at="2024-01-01T00:00:00"),
        lambda d: d["histories"][0].update(status="weird"),
        lambda d: d["histories"][1]["messages"][0].update(id=d["histories"][0]["messages"][0]["id"]),
        lambda d: d["histories"][0]["messages"][0].update(content="nul\x00"),
        lambda d: d["conversation"].update(title="x" * 500),
        lambda d: d["histories"][0]["messages"][0].update(metadata={"x": float("nan")}),
        lambda d: d["histories"][0]["messages"][0].update(seq=2**63),
        lambda d: d["histories"][0]["messages"][0].update(created_at="9999-12-31T23:00:00-05:00"),
        lambda d: d["histories"][0].update(finished_at="0001-01-01T00:00:00+05:00"),
        lambda d: d["conversation"].update(pinned_at="9999-12-31T23:59:59.999999-00:01"),
        # An error as long as finish_history and fail_message refuse.
        lambda d: d["histories"][0].update(error="x" * 100_001),
        lambda d: d["histories"][1]["messages"][1].update(error="x" * 100_001),
    ],
)
async def test_malformed_documents_import_nothing(alice: Scope, damage: Any) -> None:
    cid = await _rich_conversation(alice)
    doc = await alice.export_conversation(cid)
    await alice.delete_conversation(cid)
    damage(doc)
    with pytest.raises(InvalidInputError):
        await alice.import_conversation(doc, new_ids=True)
    assert (await alice.list_conversations(archived=None)).items == []


def _nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value  # type: ignore[no-any-return]


async def test_values_nested_as_deep_as_a_call_accepts_round_trip(alice: Scope) -> None:
    """Each JSON value of a document may be nested as deeply as the call that stored it allows,
    however deep the document holds it."""
    deepest = MAX_JSON_DEPTH
    conv = await alice.start_conversation(metadata=_nested(deepest))
    run = await alice.start_history(conv.id, model="m", metadata=_nested(deepest))
    call = ToolCallPart(id="c", name="f", arguments=_nested(deepest - 2))  # a part of a list
    await alice.append_messages(
        run.id,
        [
            NewMessage(
                "assistant",
                [call],
                usage=_nested(deepest),
                metadata=_nested(deepest),
                native={"format": "f", "data": _nested(deepest)},
            )
        ],
    )
    await alice.finish_history(run.id, usage=_nested(deepest))
    document = await alice.export_conversation(conv.id)

    copy = await alice.import_conversation(document, new_ids=True)

    assert _without_ids(await alice.export_conversation(copy.id)) == _without_ids(document)
    with pytest.raises(InvalidInputError):
        await alice.start_conversation(metadata=_nested(deepest + 1))
    document["conversation"]["metadata"] = _nested(deepest + 1)
    with pytest.raises(InvalidInputError, match="nested deeper"):
        await alice.import_conversation(document, new_ids=True)


async def test_import_is_one_transaction(alice: Scope, admin: Scope) -> None:
    cid = await _rich_conversation(alice)
    doc = await alice.export_conversation(cid)
    await alice.delete_conversation(cid)
    await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(seconds=1))
    # Only the last message's id is taken (by another conversation's message): nothing is written.
    other = await alice.start_conversation()
    run = await alice.start_history(other.id, model="m")
    (taken,) = await alice.append_messages(run.id, [NewMessage("user", "x")])
    doc["histories"][1]["messages"][-1]["id"] = str(taken.id)
    with pytest.raises(ConflictError):
        await alice.import_conversation(doc)
    assert [c.id for c in (await alice.list_conversations(archived=None)).items] == [other.id]
    doc["histories"][1]["messages"][-1]["id"] = "01a20afb-8ff7-7c39-bfb5-81f6c14093a5"
    assert str((await alice.import_conversation(doc)).id) == cid


def test_json_lines_helpers() -> None:
    docs = [{"a": "line\nbreak ☃"}, {"b": [1, 2]}]
    lines = [dump_line(d) for d in docs]
    assert all(line.count("\n") == 1 and line.endswith("\n") for line in lines)
    text_lines = [lines[0], "\n", "{broken\n", "[1, 2]\n", lines[1]]
    assert list(read_lines(text_lines)) == [
        (1, docs[0], None),
        (3, None, _error(text_lines[2])),
        (4, None, "not a JSON object"),
        (5, docs[1], None),
    ]


def test_a_line_nested_too_deeply_to_read_is_reported_and_the_next_is_read() -> None:
    """Python's JSON reader gives up on deep nesting with a RecursionError, not a ValueError: it
    failed the whole import (the command line ended with a traceback)."""
    deep = ["[" * 100_000 + "\n", '{"a":' * 100_000 + "1" + "}" * 100_000 + "\n"]
    read = list(read_lines([*deep, dump_line({"ok": 1})]))
    assert read[2] == (3, {"ok": 1}, None)
    assert [(number, document) for number, document, _ in read[:2]] == [(1, None), (2, None)]
    assert all(error is not None and error.startswith("not JSON: ") for _, _, error in read[:2])


def _error(line: str) -> str:
    try:
        json.loads(line)
    except ValueError as exc:
        return f"not JSON: {exc}"
    raise AssertionError


async def test_purge_removes_only_old_soft_deleted_data_in_the_tenant(
    memory: ChatMemory, alice: Scope, bob: Scope, admin: Scope
) -> None:
    gone = await _rich_conversation(alice)
    kept = await alice.start_conversation("kept")
    run = await alice.start_history(kept.id, model="m")
    old_run = await alice.start_history(kept.id, model="m")
    msgs = await alice.append_messages(run.id, [NewMessage("user", f"purge word {i}") for i in range(3)])
    await alice.append_messages(old_run.id, [NewMessage("user", "purge word in old run")])
    await alice.delete_message(msgs[0].id)
    await alice.delete_history(old_run.id)
    await alice.delete_conversation(gone)
    bob_conv = await bob.start_conversation()
    await bob.delete_conversation(bob_conv.id)
    acme = memory.scoped(Principal("carol", tenant="acme"))
    acme_conv = await acme.start_conversation()
    await acme.delete_conversation(acme_conv.id)

    with pytest.raises(InvalidInputError):
        await alice.purge_deleted(deleted_before=datetime.now(UTC))
    with pytest.raises(InvalidInputError):
        await admin.purge_deleted(deleted_before=datetime(2030, 1, 1))
    with pytest.raises(InvalidInputError):  # before year 1 in UTC
        await admin.purge_deleted(deleted_before=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    nothing = await admin.purge_deleted(deleted_before=datetime.now(UTC) - timedelta(days=1))
    assert (nothing.conversations, nothing.histories, nothing.messages) == (0, 0, 0)

    counts = await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(seconds=1))
    assert (counts.conversations, counts.histories, counts.messages) == (2, 3, 9)
    async with memory.engine.connect() as conn:
        left = (await conn.execute(text("SELECT count(*) FROM chat_messages"))).scalar_one()
        tenants = (await conn.execute(text("SELECT tenant_id FROM chat_conversations"))).scalars().all()
    assert left == 2
    assert sorted(map(str, tenants)) == ["None", "acme"]
    assert sorted(h.message.content for h in (await alice.search_messages("purge word")).items) == [
        "purge word 1",
        "purge word 2",
    ]
    assert (await alice.get_conversation(kept.id)).message_count == 2


async def _cancelled_at(work: Any, delay: float) -> None:
    """Cancel ``work`` (a coroutine) after ``delay`` seconds; fail unless the cancelled call
    ends within seconds."""
    task = asyncio.ensure_future(work)
    await asyncio.sleep(delay)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=30)
    if not done:
        task.cancel()  # a second cancellation frees the call, so the store can close
        await asyncio.wait({task}, timeout=30)
        pytest.fail(f"a call cancelled after {delay:.3f} s never ended")
    assert task.cancelled() or task.exception() is None


async def test_a_cancelled_import_or_purge_ends_whole_and_the_store_goes_on(
    memory: ChatMemory, alice: Scope, admin: Scope
) -> None:
    """An import or a purge cancelled while it writes ends at once, all or nothing, as any write
    does: the driver is never interrupted in the middle of a statement (on PostgreSQL an insert
    of many rows cancelled midway never returned)."""
    conv = await alice.start_conversation("big")
    run = await alice.start_history(conv.id, model="m")
    for _ in range(2):
        await alice.append_messages(run.id, [NewMessage("user", "x" * 1000) for _ in range(1000)])
    document = await alice.export_conversation(conv.id)
    started = asyncio.get_running_loop().time()
    await alice.import_conversation(document, new_ids=True)
    took = asyncio.get_running_loop().time() - started
    for fraction in (0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0):
        await _cancelled_at(alice.import_conversation(document, new_ids=True), took * fraction)
    for summary in (await alice.list_conversations(limit=100)).items:
        detail = await alice.get_conversation(summary.id, messages=True)
        assert detail.message_count == len(detail.histories[0].messages or []) == 2000
    for summary in (await alice.list_conversations(limit=100)).items[1:]:
        await alice.delete_conversation(summary.id)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    await _cancelled_at(admin.purge_deleted(deleted_before=soon), took / 4)
    await alice.import_conversation(document, new_ids=True)
    assert len((await alice.list_conversations(limit=100)).items) == 2


async def _row_counts(memory: ChatMemory) -> list[int]:
    async with memory.engine.connect() as conn:
        tables = ("chat_conversations", "chat_histories", "chat_messages")
        return [(await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one() for t in tables]


async def test_a_purge_counts_exactly_what_it_removes_while_conversations_are_deleted(
    memory: ChatMemory, alice: Scope, admin: Scope, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation deleted while a purge runs is purged whole or not at all, and counted as
    removed: on PostgreSQL one committed between the purge's statements had its histories and
    messages removed by the cascade, uncounted."""
    old = await alice.record_run(model="m", messages=[NewMessage("user", "a"), NewMessage("user", "b")])
    await alice.delete_conversation(old.conversation_id)
    racing = await alice.record_run(model="m", messages=[NewMessage("user", "c"), NewMessage("user", "d")])
    before = await _row_counts(memory)
    execute = AsyncConnection.execute
    raced: list[asyncio.Future[None]] = []

    async def execute_then_delete(self: AsyncConnection, statement: Any, *args: Any, **kwargs: Any) -> Any:
        result = await execute(self, statement, *args, **kwargs)
        if not raced:
            raced.append(asyncio.ensure_future(alice.delete_conversation(racing.conversation_id)))
            if backend == "postgres":  # on SQLite it waits for the purge, the one writer
                await raced[0]
        return result

    monkeypatch.setattr(AsyncConnection, "execute", execute_then_delete)
    counts = await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(hours=1))
    await raced[0]
    monkeypatch.undo()

    removed = [b - a for b, a in zip(before, await _row_counts(memory), strict=True)]
    assert [counts.conversations, counts.histories, counts.messages] == removed
    assert removed in ([1, 1, 2], [2, 2, 4])
