"""Every benchmarked system, and whether its package is installed."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from benchmarks._system import Entry, Family, System


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _entry(name: str, family: Family, backends: str, build: Callable[[], System], *requires: str) -> Entry:
    missing = [m for m in requires if not _installed(m)]
    return Entry(
        name,
        family,
        frozenset(backends.split()),
        build,
        f"not installed ({', '.join(missing)})" if missing else None,
    )


def _chatmemory() -> System:
    from benchmarks._chatmemory import ChatMemorySystem

    return ChatMemorySystem()


def _sqlite_thread() -> System:
    from benchmarks._raw_sqlite import SqliteThreadSystem

    return SqliteThreadSystem()


def _aiosqlite() -> System:
    from benchmarks._raw_sqlite import AiosqliteSystem

    return AiosqliteSystem()


def _asyncpg() -> System:
    from benchmarks._raw_asyncpg import AsyncpgSystem

    return AsyncpgSystem()


def _core() -> System:
    from benchmarks._raw_core import CoreSystem

    return CoreSystem()


def _core_thread() -> System:
    from benchmarks._raw_core_thread import CoreThreadSystem

    return CoreThreadSystem()


def _agents_sqlite() -> System:
    from benchmarks._peers_agents import SQLiteSessionSystem

    return SQLiteSessionSystem()


def _agents_async_sqlite() -> System:
    from benchmarks._peers_agents import AsyncSQLiteSessionSystem

    return AsyncSQLiteSessionSystem()


def _agents_sqlalchemy() -> System:
    from benchmarks._peers_agents import SQLAlchemySessionSystem

    return SQLAlchemySessionSystem()


def _langchain() -> System:
    from benchmarks._peers_langchain import LangChainSQLHistorySystem

    return LangChainSQLHistorySystem()


def _adk() -> System:
    from benchmarks._peers_adk import AdkSessionSystem

    return AdkSessionSystem()


def entries() -> list[Entry]:
    """All systems, chatmemory first, then the raw limits, then the peers."""
    return [
        _entry("chatmemory", "chatmemory", "sqlite postgres", _chatmemory),
        _entry("raw sqlite3+to_thread", "raw", "sqlite", _sqlite_thread),
        _entry("raw aiosqlite", "raw", "sqlite", _aiosqlite, "aiosqlite"),
        _entry("raw asyncpg", "raw", "postgres", _asyncpg, "asyncpg"),
        _entry("raw SQLAlchemy Core async", "raw", "sqlite postgres", _core),
        _entry("raw SQLAlchemy Core sync+to_thread", "raw", "sqlite", _core_thread),
        _entry("openai-agents SQLiteSession", "peer", "sqlite", _agents_sqlite, "agents"),
        _entry(
            "openai-agents AsyncSQLiteSession",
            "peer",
            "sqlite",
            _agents_async_sqlite,
            "agents",
            "agents.extensions.memory.async_sqlite_session",
        ),
        _entry(
            "openai-agents SQLAlchemySession",
            "peer",
            "sqlite postgres",
            _agents_sqlalchemy,
            "agents",
            "agents.extensions.memory.sqlalchemy_session",
        ),
        _entry(
            "langchain SQLChatMessageHistory",
            "peer",
            "sqlite postgres",
            _langchain,
            "langchain_community",
            "langchain_core",
        ),
        _entry("google-adk DatabaseSessionService", "peer", "sqlite postgres", _adk, "google.adk"),
    ]
