"""W6's turn check and table, in process: a wiring that does not persist is reported, not timed."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from benchmarks._data import QUICK, Msg
from benchmarks._targets import Store
from benchmarks.adapters import w6_tables
from benchmarks.adapters._langchain import AgentTurns, InMemoryHistories
from benchmarks.adapters._turns import Mismatch, key, measure
from benchmarks.report import Recorder, markdown

SIZES = dataclasses.replace(QUICK, w6_turns=2, w6_warmup_turns=1)
UNUSED = Store("sqlite", "sqlite:///unused.db")
# LangChain deprecates InMemoryChatMessageHistory, the store W6 compares against; nothing else warns.
pytestmark = pytest.mark.filterwarnings("ignore::langchain_core._api.deprecation.LangChainDeprecationWarning")


class ForgetfulHistories(InMemoryHistories):
    """Histories that drop whatever is added after loading: a wiring that never persists a turn."""

    async def new(self, messages: Sequence[Msg]) -> Any:
        history = await super().new(messages)
        object.__setattr__(history, "aadd_messages", _ignore)
        return history


async def _ignore(messages: Sequence[Any]) -> None:
    return None


async def test_a_turn_that_gets_the_whole_conversation_is_timed() -> None:
    system = AgentTurns(InMemoryHistories())
    await system.start(UNUSED)
    p50, p99 = await measure(system, 10, SIZES)
    assert 0 < p50 <= p99


async def test_a_wiring_that_does_not_persist_fails_on_the_next_turn() -> None:
    system = AgentTurns(ForgetfulHistories())
    await system.start(UNUSED)
    with pytest.raises(Mismatch, match="turn 2: the model got 11 of 13 messages"):
        await measure(system, 10, SIZES)


def test_the_table_names_each_row_and_says_a_failure_once() -> None:
    rec = Recorder(backend="sqlite")
    adapter = "langchain create_agent + ChatMemoryMiddleware"
    store = "langchain create_agent + SQLChatMessageHistory"
    for length, ours, theirs in ((10, 20.0, 10.0), (100, 40.0, 10.0)):
        rec.add(adapter, key("p50", length), ours, "ms")
        rec.add(adapter, key("p99", length), ours * 2, "ms")
        rec.add(store, key("p50", length), theirs, "ms")
        rec.add(store, key("p99", length), theirs, "ms")
    broken = "openai-agents ChatMemorySession, Runner.run(session=)"
    for length in (10, 100):
        for quantile in ("p50", "p99"):
            rec.note(broken, key(quantile, length), "failed: turn 2: the model got 11 of 13 messages")
    text = "\n".join(w6_tables(rec, "sqlite"))
    assert "| create_agent + ChatMemoryMiddleware | 20.00 | 40.00 | 40.00 | 80.00 | 2.0x |" in text
    assert "| langchain create_agent + ChatMemoryMiddleware | 0.50x (SQLChatMessageHistory) |" in text
    assert text.count("failed: turn 2") == 2  # under each length's p50 only
    assert text in markdown(rec, w6_tables)  # W6 alone: no W1-W5 tables around it
    assert "W1 turns/s" not in markdown(rec, w6_tables)
