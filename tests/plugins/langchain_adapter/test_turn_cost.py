"""Transactions per ``create_agent`` turn through ChatMemoryMiddleware: a read, the input with the
history's start, the answer as soon as the model gives it, and the history's end (with anything
left unstored). The answer is written before the run ends, so a run stopped after it keeps it.
On PostgreSQL each is one statement, the answer's too, though its messages carry keys."""

from __future__ import annotations

from chatmemory import ChatMemory
from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import call, fake
from tests.plugins.langchain_adapter._helpers import agent, histories, rows, user
from tests.transactions import counted, statements


async def test_four_transactions_per_turn(memory: ChatMemory, alice: Scope) -> None:
    conv = await alice.start_conversation()
    graph = agent(alice, conv.id, fake("one", "two", "three"))
    await graph.ainvoke(user("first"))
    for text in ("second", "third"):
        with counted(memory) as transactions, statements(memory) as sent:
            await graph.ainvoke(user(text))
        assert transactions == ["read", "write", "write", "write"]
        if not memory._db.is_sqlite:  # each one statement, the keyed answer's too
            assert len(sent) == 4, [stmt.sql.postgres[:40] for stmt in sent]
    runs = await histories(alice, conv.id)
    assert [(h.status, h.system_prompts) for h in runs] == [("completed", ["You add numbers."])] * 3
    assert rows(runs[-1].messages) == [("user", None, "third"), ("assistant", "fake-a", "three")]


async def test_a_tool_step_adds_one_transaction_per_write(memory: ChatMemory, alice: Scope) -> None:
    conv = await alice.start_conversation()
    graph = agent(alice, conv.id, fake("hello", call("add", "c1", a=2, b=3), "5"))
    await graph.ainvoke(user("first"))
    with counted(memory) as transactions:
        await graph.ainvoke(user("2+3"))
    # read; input + start; the tool call; the tool's result; the answer; the end
    assert transactions == ["read", "write", "write", "write", "write", "write"]
    (_, run) = await histories(alice, conv.id)
    assert [m.role for m in run.messages or []] == ["user", "assistant", "tool", "assistant"]
    assert run.status == "completed"
