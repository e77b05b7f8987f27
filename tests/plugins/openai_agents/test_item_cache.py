"""A session reuses the items it read only while they are current: any other writer's change shows.

The other writer is another process, or a second ``ChatMemory`` on the same database (its
own connections, as another process has), changing the conversation between two reads of a
session that has already read it. The truth is what a new session, which has read nothing,
returns.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator

import pytest
from agents import Runner
from agents.testing import assistant_message
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import ChatMemory, NewMessage, Principal
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, make_agent


@pytest.fixture
async def elsewhere(db_url: str) -> AsyncIterator[Scope]:
    """alice's scope through a second store on the same database: another writer."""
    async with ChatMemory.open(db_url) as other:
        yield other.scoped(Principal("alice"))


# Pops the newest item, then adds one, through a session of its own, in another process.
POP_AND_ADD = textwrap.dedent(
    """
    import asyncio, sys
    from chatmemory import ChatMemory, Principal
    from chatmemory_openai_agents import ChatMemorySession

    async def main(url, conversation_id):
        async with ChatMemory.open(url) as memory:
            session = ChatMemorySession(memory.scoped(Principal("alice")), conversation_id)
            await session.pop_item()
            await session.add_items([{"role": "user", "content": "from another process"}])

    asyncio.run(main(*sys.argv[1:3]))
    """
)


async def _warm(alice: Scope, turns: int = 3) -> ChatMemorySession:
    """A session that has run ``turns`` turns, so it holds the conversation's items."""
    conversation = await alice.start_conversation()
    session = ChatMemorySession(alice, conversation.id)
    model = NamedModel("m", [[assistant_message(f"a{i}")] for i in range(turns)])
    for i in range(turns):
        await Runner.run(make_agent("t", model), f"u{i}", session=session)
    assert len(await session.get_items()) == 2 * turns
    return session


async def _truth(elsewhere: Scope, session: ChatMemorySession) -> list[object]:
    return list(await ChatMemorySession(elsewhere, session.conversation_id).get_items())


def _texts(items: list[object]) -> list[object]:
    """Each item's text: a plain string, or the text of its single content part."""
    texts: list[object] = []
    for item in items:
        content = item.get("content") if isinstance(item, dict) else item
        texts.append(content[0]["text"] if isinstance(content, list) and len(content) == 1 else content)
    return texts


async def test_items_another_writer_adds_are_read(alice: Scope, elsewhere: Scope) -> None:
    session = await _warm(alice)
    other = ChatMemorySession(elsewhere, session.conversation_id)
    await other.add_items([{"role": "user", "content": "from elsewhere"}])
    items = await session.get_items()
    assert _texts(items)[-1] == "from elsewhere"
    assert items == await _truth(elsewhere, session)


async def test_a_pop_and_an_add_by_another_process_are_read(
    db_url: str, alice: Scope, elsewhere: Scope
) -> None:
    session = await _warm(alice)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", POP_AND_ADD, db_url, str(session.conversation_id), env=dict(os.environ)
    )
    assert await asyncio.wait_for(process.wait(), timeout=120) == 0
    items = await session.get_items()
    assert _texts(items) == ["u0", "a0", "u1", "a1", "u2", "from another process"]
    assert items == await _truth(elsewhere, session)


async def test_many_items_another_writer_adds_are_all_read(alice: Scope, elsewhere: Scope) -> None:
    session = await _warm(alice)
    other = ChatMemorySession(elsewhere, session.conversation_id)
    await other.add_items([{"role": "user", "content": f"x{i}"} for i in range(40)])
    items = await session.get_items()
    assert _texts(items)[-40:] == [f"x{i}" for i in range(40)]
    assert items == await _truth(elsewhere, session)


async def test_an_item_another_writer_pops_is_gone(alice: Scope, elsewhere: Scope) -> None:
    session = await _warm(alice)
    popped = await ChatMemorySession(elsewhere, session.conversation_id).pop_item()
    items = await session.get_items()
    assert popped not in items and len(items) == 5
    assert items == await _truth(elsewhere, session)


async def test_an_older_message_deleted_while_another_is_added_is_gone(
    alice: Scope, elsewhere: Scope
) -> None:
    # One deleted, one added: the newest messages and the last seq alone would not show it.
    session = await _warm(alice)
    second = (await elsewhere.transcript(session.conversation_id))[1]
    await elsewhere.delete_message(second.id)
    other = ChatMemorySession(elsewhere, session.conversation_id)
    await other.add_items([{"role": "user", "content": "new"}])
    items = await session.get_items()
    assert _texts(items) == ["u0", "u1", "a1", "u2", "a2", "new"]
    assert items == await _truth(elsewhere, session)


async def test_a_conversation_cleared_and_refilled_elsewhere_is_read_anew(
    alice: Scope, elsewhere: Scope
) -> None:
    session = await _warm(alice)
    other = ChatMemorySession(elsewhere, session.conversation_id)
    await other.clear_session()
    await other.add_items([{"role": "user", "content": f"n{i}"} for i in range(6)])
    items = await session.get_items()
    assert _texts(items) == [f"n{i}" for i in range(6)]


async def test_a_pending_message_completed_elsewhere_is_read(alice: Scope, elsewhere: Scope) -> None:
    session = await _warm(alice)
    history = await alice.start_history(session.conversation_id, model="m")
    [pending] = await alice.append_messages(history.id, [NewMessage("assistant", "", status="pending")])
    assert len(await session.get_items()) == 6  # a pending message holds no item yet
    await elsewhere.complete_message(pending.id, content="done")
    items = await session.get_items()
    assert _texts(items)[-1] == "done"
    assert items == await _truth(elsewhere, session)


async def test_changing_the_items_read_changes_nothing_stored_or_cached(alice: Scope) -> None:
    session = await _warm(alice)
    first = await session.get_items()
    first[0]["content"] = "changed"
    first.clear()
    assert _texts(await session.get_items())[:2] == ["u0", "a0"]


@pytest.fixture
def statements(memory: ChatMemory) -> Iterator[list[str]]:
    """Each statement the store sends to the database from now on."""
    log: list[str] = []
    db = memory._db
    db.set_trace(lambda stmt: log.append(stmt.sql.sqlite if db.is_sqlite else stmt.sql.postgres))
    try:
        yield log
    finally:
        db.set_trace(None)


async def test_a_turn_reads_only_the_newest_messages_once_the_session_has_read(
    alice: Scope, statements: list[str]
) -> None:
    session = await _warm(alice)
    statements.clear()
    model = NamedModel("m", [[assistant_message("again")]])
    await Runner.run(make_agent("t", model), "next", session=session)
    assert model.last_call is not None and len(model.last_call.input) == 7
    reads = [" ".join(s.split()) for s in statements if "FROM chat_messages" in s and "SELECT" in s]
    assert reads and all("LIMIT" in s for s in reads), reads


async def test_popping_items_added_since_the_last_read_does_not_read_the_conversation_whole(
    alice: Scope, elsewhere: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn answered again (its answer popped, another added) before the session reads again:
    the items read before still hold, and the next read proves it without a whole read."""
    session = await _warm(alice)
    whole: list[object] = []
    get_tail = Scope.get_tail

    async def counting(self: Scope, cid: object, *, limit: int | None = None, since: object = None) -> object:
        if limit is None:
            whole.append(cid)
        return await get_tail(self, cid, limit=limit, since=since)  # type: ignore[arg-type]

    monkeypatch.setattr(Scope, "get_tail", counting)
    for i in range(5):
        await session.get_items()
        await session.add_items(
            [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"x{i}"}]
        )
        await session.pop_item()
        await session.add_items([{"role": "assistant", "content": f"y{i}"}])
    items = await session.get_items()
    monkeypatch.undo()
    assert items == await _truth(elsewhere, session)
    assert whole == []
