"""A read that fails on what another process stored (a value that no longer validates as a
message, text that is not UTF-8) fails alone, with ``CorruptDataError``: the reader's connection is
left as clean as after any other read, and the next read sees what was committed since."""

from __future__ import annotations

import gc
import re
from pathlib import Path

import pytest
from sqlalchemy import text

from chatmemory import ChatMemory, Conversation, History, Principal
from chatmemory._db import create_engine
from chatmemory.errors import CorruptDataError
from chatmemory.scope import Scope

_BOGUS = '[{"type": "no such part"}]'


async def _set_parts(memory: ChatMemory, seq: int, parts: str | None) -> None:
    value = ":p" if memory._db.is_sqlite else "CAST(:p AS jsonb)"
    async with memory._db.transaction(write=True) as conn:
        await conn.execute(
            text(f"UPDATE chat_messages SET parts = {value} WHERE seq = :s"), {"p": parts, "s": seq}
        )


async def test_a_message_that_no_longer_validates_leaves_later_reads_current(
    memory: ChatMemory, alice: Scope
) -> None:
    conv = await alice.start_conversation("long")
    history = await alice.start_history(conv.id, model="m")
    stored = await alice.append_messages(
        history.id, [{"role": "user", "content": str(i)} for i in range(600)]
    )
    await alice.finish_history(history.id)
    # Halfway through the conversation, with rows after it.
    await _set_parts(memory, stored[300].seq, _BOGUS)
    enabled = gc.isenabled()
    gc.disable()  # what a read leaves behind must not wait for the collector
    try:
        for read in (
            lambda: alice.transcript(conv.id),
            lambda: alice.get_conversation(conv.id, messages=True),
            lambda: alice.get_history(history.id),
        ):
            for _ in range(3):
                with pytest.raises(
                    CorruptDataError,
                    match=r"a stored message could not be read \(parts.0: Input tag 'no such part'",
                ):
                    await read()
        await _set_parts(memory, stored[300].seq, None)
        more = await alice.start_history(conv.id, model="m")
        await alice.append_messages(more.id, [{"role": "user", "content": "later"}])
        for _ in range(4):
            transcript = await alice.transcript(conv.id)
            assert len(transcript) == 601 and transcript[-1].content == "later"
            assert (await alice.get_history(history.id)).messages == transcript[:600]
            detail = await alice.get_conversation(conv.id, messages=True)
            assert len(detail.histories) == 2
    finally:
        if enabled:
            gc.enable()


async def test_a_row_that_fails_to_decode_fails_its_read_alone(tmp_path: Path) -> None:
    """SQLite (PostgreSQL stores no text that is not UTF-8): text another process stored that is
    not UTF-8 fails the reads that meet it with ``CorruptDataError`` (a page on its caller's thread
    too), and once mended reads see it mended."""
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'decode.db'}") as memory:
        await _fails_alone_then_mended(memory, memory.scoped(Principal("alice")))


async def _fails_alone_then_mended(memory: ChatMemory, alice: Scope) -> None:
    conv = await alice.start_conversation("long")
    history = await alice.start_history(conv.id, model="m")
    stored = await alice.append_messages(
        history.id, [{"role": "user", "content": str(i)} for i in range(600)]
    )

    async def set_content(value: str) -> None:
        async with memory._db.transaction(write=True) as conn:
            await conn.execute(
                text(f"UPDATE chat_messages SET content = {value} WHERE seq = :s"), {"s": stored[300].seq}
            )

    async def paged() -> int:
        count, cursor = 0, None
        while True:
            page = await alice.list_messages(conversation_id=conv.id, limit=100, cursor=cursor)
            count += len(page.items)
            if not page.has_more:
                return count
            cursor = page.next_cursor

    await set_content("CAST(X'FF' AS TEXT)")
    enabled = gc.isenabled()
    gc.disable()  # what a read leaves behind must not wait for the collector
    try:
        for _ in range(3):
            with pytest.raises(CorruptDataError, match="decode"):
                await alice.transcript(conv.id)
            with pytest.raises(CorruptDataError, match="decode"):
                await paged()
        await set_content("'mended'")
        for _ in range(4):
            transcript = await alice.transcript(conv.id)
            assert len(transcript) == 600 and transcript[300].content == "mended"
            assert await paged() == 600
    finally:
        if enabled:
            gc.enable()


async def _corrupt(memory: ChatMemory, table: str, column: str, value: str) -> None:
    """Set ``column`` of every row of ``table`` to the SQL ``value``, as another program might."""
    jsonb = not memory._db.is_sqlite and column in ("parts", "usage", "system_prompts", "metadata")
    async with memory._db.transaction(write=True) as conn:
        await conn.execute(
            text(f"UPDATE {table} SET {column} = {f'CAST({value} AS jsonb)' if jsonb else value}")
        )


async def _stored(alice: Scope) -> tuple[Conversation, History]:
    conv = await alice.start_conversation("c")
    history = await alice.start_history(conv.id, model="m")
    await alice.append_messages(history.id, [{"role": "user", "content": "hi"}])
    return conv, history


async def _read(alice: Scope, kind: str, conv: Conversation, history: History) -> object:
    if kind == "message":
        return await alice.transcript(conv.id)
    if kind == "history":
        return await alice.get_history(history.id)
    return await alice.list_conversations()


# JSON of another shape than chatmemory writes there, which both backends can hold, and what the
# error names.
_RESHAPED = {
    "message parts": ("chat_messages", "parts", '\'{"not": "parts"}\'', "message", "parts: "),
    "a message's native form": ("chat_messages", "native", "'{\"data\": 1}'", "message", "native.format: "),
    "history prompts": ("chat_histories", "system_prompts", "'{\"a\": 1}'", "history", "system_prompts: "),
    "conversation metadata": ("chat_conversations", "metadata", "'[1, 2]'", "conversation", "metadata: "),
}


@pytest.mark.parametrize(
    ("table", "column", "value", "kind", "named"), list(_RESHAPED.values()), ids=list(_RESHAPED)
)
async def test_json_of_another_shape_fails_its_read_with_corrupt_data_error(
    memory: ChatMemory, alice: Scope, table: str, column: str, value: str, kind: str, named: str
) -> None:
    """The read raises ``CorruptDataError`` naming what could not be read, and which field, not
    pydantic's own error."""
    conv, history = await _stored(alice)
    await _corrupt(memory, table, column, value)
    with pytest.raises(CorruptDataError, match=f"a stored {kind} could not be read \\({re.escape(named)}"):
        await _read(alice, kind, conv, history)


# What PostgreSQL's typed columns (jsonb, uuid, timestamptz) would refuse to hold, and SQLite's
# dynamic typing holds in any column: text that does not parse, and values of another storage
# class than chatmemory writes (a number for a time, as Unix seconds; a BLOB for JSON).
_SQLITE_ONLY = {
    "message usage that is not JSON": ("chat_messages", "usage", "'{oops'", "message"),
    "a message time": ("chat_messages", "created_at", "'yesterday'", "message"),
    "a message id": ("chat_messages", "id", "'not hex'", "message"),
    "a history time": ("chat_histories", "created_at", "'yesterday'", "history"),
    "conversation metadata that is not JSON": ("chat_conversations", "metadata", "'{oops'", "conversation"),
    "a message time as a number": ("chat_messages", "created_at", "1700000000", "message"),
    "message parts as a BLOB": ("chat_messages", "parts", "X'5b5d'", "message"),
    "message native as a BLOB": ("chat_messages", "native", "X'7b7d'", "message"),
    "a history time as a number": ("chat_histories", "created_at", "1700000000", "history"),
    "a conversation time as a number": ("chat_conversations", "created_at", "1700000000", "conversation"),
}


@pytest.mark.parametrize(
    ("table", "column", "value", "kind"), list(_SQLITE_ONLY.values()), ids=list(_SQLITE_ONLY)
)
async def test_sqlite_values_chatmemory_did_not_write_fail_their_read_with_corrupt_data_error(
    tmp_path: Path, table: str, column: str, value: str, kind: str
) -> None:
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'corrupt.db'}") as memory:
        alice = memory.scoped(Principal("alice"))
        conv, history = await _stored(alice)
        await _corrupt(memory, table, column, value)
        with pytest.raises(CorruptDataError, match=f"a stored {kind} could not be read"):
            await _read(alice, kind, conv, history)


@pytest.mark.parametrize(
    ("table", "column", "kind", "mended"),
    [
        ("chat_messages", "updated_at", "message", "created_at"),
        ("chat_histories", "created_at", "history", "updated_at"),
        ("chat_conversations", "updated_at", "conversation", "created_at"),
    ],
)
@pytest.mark.parametrize(
    "when", ["12000-01-01 00:00:00+00", "0100-01-01 00:00:00+00 BC"], ids=["after 9999", "before 1"]
)
async def test_a_time_beyond_python_s_years_fails_its_read_with_corrupt_data_error(
    memory: ChatMemory, alice: Scope, table: str, column: str, kind: str, mended: str, when: str
) -> None:
    """A time Python's ``datetime`` cannot hold (PostgreSQL's years go on to 294276, and back
    before year 1; SQLite holds any text) fails its read with ``CorruptDataError`` on both
    backends, as any other value chatmemory did not write, and reads again once mended."""
    conv, history = await _stored(alice)
    await _corrupt(memory, table, column, f"'{when}'")
    for _ in range(2):
        with pytest.raises(CorruptDataError, match="could not be read"):
            await _read(alice, kind, conv, history)
    await _corrupt(memory, table, column, mended)
    await _read(alice, kind, conv, history)


async def test_a_time_beyond_python_s_years_read_through_a_callers_engine_is_corrupt_data(
    memory: ChatMemory, alice: Scope, db_url: str
) -> None:
    await _stored(alice)
    await _corrupt(memory, "chat_conversations", "updated_at", "'12000-01-01 00:00:00+00'")
    engine = create_engine(db_url)
    try:
        theirs = ChatMemory(engine).scoped(Principal("alice"))
        with pytest.raises(CorruptDataError, match="could not be read"):
            await theirs.list_conversations()
    finally:
        await engine.dispose()
