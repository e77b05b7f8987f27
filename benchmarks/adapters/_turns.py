"""W6: one agent turn through each chatmemory adapter and each framework's own store.

A turn is what a user pays for one message in an existing conversation: the framework (or
adapter) reloads the conversation, calls the model (the framework's offline fake, answering
at once), and persists the new input and reply. Every system gets its own fresh database,
then for each length a conversation of that many stored messages (loaded untimed, in the
system's own format), then warm-up turns, then the timed turns, one after another on that
conversation (each adds its two messages). Every turn is checked: the model must have been
sent the whole conversation, the stored messages and the new input; a system that sends
less (did not reload, or did not persist the previous turn) is reported as failed.
"""

from __future__ import annotations

import gc
import importlib.util
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from benchmarks._data import Msg, Sizes, message, percentile
from benchmarks._targets import Store, Target
from benchmarks.adapters._seed import stored

WORKLOAD = "W6"


class TurnSystem(Protocol):
    """One way of running a turn of an agent with a stored conversation."""

    async def start(self, store: Store) -> None:
        """Connect to ``store`` (a fresh database)."""

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        """A stored conversation holding ``messages``, in the system's own format (untimed)."""

    async def turn(self, conversation: Any, text: str) -> int:
        """One turn with user input ``text``; returns how many conversation messages the model got."""

    async def stop(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class TurnEntry:
    """A W6 row: the framework, the store and wiring, how to build it, where it runs."""

    framework: str
    name: str
    family: str
    backends: frozenset[str]
    build: Callable[[], TurnSystem]
    requires: tuple[str, ...] = ()
    persistent: bool = True  # False: kept in memory only, the floor rather than a store

    @property
    def wiring(self) -> str:
        """How the framework is driven (rows are compared only within one framework and wiring)."""
        return self.name.split(" + ")[0] if " + " in self.name else ""

    @property
    def store(self) -> str:
        """The store, without the wiring."""
        return self.name.split(" + ")[-1]

    @property
    def row(self) -> str:
        """The row's name in tables and JSON: framework, then store and wiring."""
        return f"{self.framework} {self.name}"

    def missing(self) -> str | None:
        """Why it cannot run here, or None."""
        absent = [m for m in self.requires if not _installed(m)]
        return f"not installed ({', '.join(absent)})" if absent else None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _system(module: str, cls: str, *args: str) -> Callable[[], TurnSystem]:
    """Builds ``cls`` of ``benchmarks.adapters.<module>``, given an instance of each class named
    in ``args`` (imported only when the row runs, so a framework that is not installed fails
    only its own rows)."""

    def build() -> TurnSystem:
        systems = importlib.import_module(f"benchmarks.adapters.{module}")
        system: TurnSystem = getattr(systems, cls)(*(getattr(systems, arg)() for arg in args))
        return system

    return build


def _langchain(wiring: str, histories: str | None) -> Callable[[], TurnSystem]:
    return _system("_langchain", wiring, *([histories] if histories else []))


_BOTH = frozenset({"sqlite", "postgres"})
_AGENTS = ("agents", "chatmemory_openai_agents")
_AGENTS_SQLALCHEMY = (*_AGENTS, "agents.extensions.memory.sqlalchemy_session")
_PYDANTIC = ("pydantic_ai", "chatmemory_pydantic_ai")
_LANGCHAIN = ("langchain", "langchain_core", "chatmemory_langchain")
_COMMUNITY = (*_LANGCHAIN, "langchain_community")
_POSTGRES = (*_LANGCHAIN, "langchain_postgres", "psycopg")
_ADK = ("google.adk", "chatmemory_adk")
_LLAMAINDEX = ("llama_index.core", "chatmemory_llamaindex")

# Per framework: chatmemory's adapters first, then the framework's own stores.
ENTRIES = [
    TurnEntry("openai-agents", "ChatMemorySession, session.run", "chatmemory", _BOTH,
              _system("_agents", "SessionRunTurns"), _AGENTS),
    TurnEntry("openai-agents", "ChatMemorySession, Runner.run(session=)", "chatmemory", _BOTH,
              _system("_agents", "RunnerRunTurns"), _AGENTS),
    TurnEntry("openai-agents", "SQLiteSession", "peer", frozenset({"sqlite"}),
              _system("_agents", "SQLiteSessionTurns"), _AGENTS),
    TurnEntry("openai-agents", "SQLAlchemySession", "peer", _BOTH,
              _system("_agents", "SQLAlchemySessionTurns"), _AGENTS_SQLALCHEMY),
    TurnEntry("pydantic-ai", "ChatMemoryCapability", "chatmemory", _BOTH,
              _system("_pydantic", "CapabilityTurns"), _PYDANTIC),
    TurnEntry("pydantic-ai", "message_history in a JSON file", "peer", _BOTH,
              _system("_pydantic", "JsonFileTurns"), _PYDANTIC),
    TurnEntry("langchain", "create_agent + ChatMemoryMiddleware", "chatmemory", _BOTH,
              _langchain("MiddlewareTurns", None), _LANGCHAIN),
    TurnEntry("langchain", "create_agent + InMemoryChatMessageHistory", "peer", _BOTH,
              _langchain("AgentTurns", "InMemoryHistories"), _LANGCHAIN, persistent=False),
    TurnEntry("langchain", "create_agent + SQLChatMessageHistory", "peer", _BOTH,
              _langchain("AgentTurns", "SQLHistories"), _COMMUNITY),
    TurnEntry("langchain", "create_agent + PostgresChatMessageHistory", "peer", frozenset({"postgres"}),
              _langchain("AgentTurns", "PostgresHistories"), _POSTGRES),
    TurnEntry("langchain", "RunnableWithMessageHistory + ChatMemoryHistory", "chatmemory", _BOTH,
              _langchain("ChainTurns", "ChatMemoryHistories"), _LANGCHAIN),
    TurnEntry("langchain", "RunnableWithMessageHistory + InMemoryChatMessageHistory", "peer", _BOTH,
              _langchain("ChainTurns", "InMemoryHistories"), _LANGCHAIN, persistent=False),
    TurnEntry("langchain", "RunnableWithMessageHistory + SQLChatMessageHistory", "peer", _BOTH,
              _langchain("ChainTurns", "SQLHistories"), _COMMUNITY),
    TurnEntry("langchain", "RunnableWithMessageHistory + PostgresChatMessageHistory", "peer",
              frozenset({"postgres"}), _langchain("ChainTurns", "PostgresHistories"), _POSTGRES),
    TurnEntry("google-adk", "Runner + ChatMemorySessionService", "chatmemory", _BOTH,
              _system("_adk", "ChatMemoryServiceTurns"), _ADK),
    TurnEntry("google-adk", "Runner + InMemorySessionService", "peer", _BOTH,
              _system("_adk", "InMemoryServiceTurns"), _ADK, persistent=False),
    TurnEntry("google-adk", "Runner + DatabaseSessionService", "peer", _BOTH,
              _system("_adk", "DatabaseServiceTurns"), _ADK),
    TurnEntry("llama-index", "FunctionAgent, ChatMemoryBuffer + ChatMemoryChatStore", "chatmemory", _BOTH,
              _system("_llamaindex", "ChatStoreTurns"), _LLAMAINDEX),
    TurnEntry("llama-index", "FunctionAgent, ChatMemoryBuffer + SimpleChatStore", "peer", _BOTH,
              _system("_llamaindex", "SimpleChatStoreTurns"), _LLAMAINDEX, persistent=False),
    TurnEntry("llama-index", "FunctionAgent, Memory + ChatMemoryDBChatStore", "chatmemory", _BOTH,
              _system("_llamaindex", "DBChatStoreTurns"), _LLAMAINDEX),
    TurnEntry("llama-index", "FunctionAgent, Memory + SQLAlchemyChatStore", "peer", _BOTH,
              _system("_llamaindex", "SQLAlchemyChatStoreTurns"), _LLAMAINDEX),
]  # fmt: skip


def label(length: int) -> str:
    """``10``, ``1k``, ``10k``: how a stored length is named in tables and workload keys."""
    return f"{length // 1000}k" if length >= 1000 and length % 1000 == 0 else str(length)


def key(quantile: str, length: int) -> str:
    """The workload key of one figure, e.g. ``W6.p50.10k``."""
    return f"{WORKLOAD}.{quantile}.{label(length)}"


class Mismatch(AssertionError):
    """The model was not sent the whole conversation."""


async def measure(system: TurnSystem, length: int, sizes: Sizes) -> tuple[float, float]:
    """p50 and p99 of ``sizes.w6_turns`` timed turns on a conversation of ``length`` messages."""
    conversation = await system.conversation(stored(length))
    gc.collect()  # cyclic garbage left by loading (or by the rows before) is not this turn's cost
    samples: list[float] = []
    for number in range(sizes.w6_warmup_turns + sizes.w6_turns):
        expected = length + 2 * number + 1
        text = message(f"w6-{label(length)}", 2 * number).text
        start = time.perf_counter()
        seen = await system.turn(conversation, text)
        elapsed = (time.perf_counter() - start) * 1000
        if seen != expected:
            raise Mismatch(f"turn {number + 1}: the model got {seen} of {expected} messages")
        if number >= sizes.w6_warmup_turns:
            samples.append(elapsed)
    return percentile(samples, 0.5), percentile(samples, 0.99)


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _reason(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, Mismatch) else f"{type(exc).__name__}: {exc}"
    return "failed: " + re.sub(r"[\s|]+", " ", text).strip()[:160]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:24]


async def run_w6(target: Target, sizes: Sizes, only: tuple[str, ...], rec: Any) -> None:
    """Every selected W6 row on ``target``: figures, or a note saying why there are none."""
    for entry in ENTRIES:
        if target.backend not in entry.backends:
            continue
        if only and not any(o.lower() in entry.row.lower() for o in only):
            continue
        keys = [key(q, n) for n in sizes.w6_lengths for q in ("p50", "p99")]
        rec.families[entry.row] = entry.family
        missing = entry.missing()
        if missing is not None:
            for k in keys:
                rec.note(entry.row, k, missing)
            continue
        _log(f"{entry.row} on {target.backend}: W6")
        try:
            system = entry.build()
            await system.start(await target.fresh(_slug(entry.row)))
        except Exception as exc:
            _log(f"{entry.row} W6 setup failed:\n{traceback.format_exc()}")
            for k in keys:
                rec.note(entry.row, k, _reason(exc))
            continue
        try:
            for length in sizes.w6_lengths:
                _log(f"{entry.row}: W6 at {length:,} stored")
                try:
                    p50, p99 = await measure(system, length, sizes)
                except Exception as exc:
                    _log(f"{entry.row} W6 at {length} failed:\n{traceback.format_exc()}")
                    rec.note(entry.row, key("p50", length), _reason(exc))
                    rec.note(entry.row, key("p99", length), _reason(exc))
                    continue
                rec.add(entry.row, key("p50", length), p50, "ms")
                rec.add(entry.row, key("p99", length), p99, "ms")
        finally:
            await system.stop()
