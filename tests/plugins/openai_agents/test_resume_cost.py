"""Resuming with a limit reads only the newest messages from the database, however long the conversation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agents import Runner
from agents.testing import assistant_message
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import ChatMemory, NewMessage, Principal
from chatmemory._plan import Stmt
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, make_agent

LENGTH = 1_500


@pytest.fixture
def watched(memory: ChatMemory) -> Iterator[tuple[Scope, list[str]]]:
    """alice's scope, with a log of each statement the store sends to the database."""
    statements: list[str] = []
    db = memory._db

    def log(stmt: Stmt) -> None:
        statements.append(" ".join((stmt.sql.sqlite if db.is_sqlite else stmt.sql.postgres).split()))

    db.set_trace(log)
    try:
        yield memory.scoped(Principal("alice")), statements
    finally:
        db.set_trace(None)


async def test_a_limited_resume_never_reads_the_whole_conversation(watched: tuple[Scope, list[str]]) -> None:
    chat, statements = watched
    conversation = await chat.start_conversation()
    history = await chat.start_history(conversation.id, model="m")
    for start in range(0, LENGTH, 500):
        batch = [
            NewMessage("user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(start, start + 500)
        ]
        await chat.append_messages(history.id, batch)
    await chat.finish_history(history.id)

    session = ChatMemorySession(chat, conversation.id, session_settings={"limit": 4})
    model = NamedModel("m", [[assistant_message("ok")]])
    statements.clear()
    await Runner.run(make_agent("t", model), "next", session=session)

    assert model.last_call is not None
    assert [item["content"] for item in model.last_call.input] == [
        f"m{i}" for i in range(LENGTH - 4, LENGTH)
    ] + ["next"]
    reads = [s for s in statements if s.startswith("SELECT") and "FROM chat_messages" in s]
    assert reads
    assert all("LIMIT" in s for s in reads), reads
