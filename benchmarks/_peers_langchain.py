"""LangChain's ``SQLChatMessageHistory`` (langchain-community) on an async engine.

It can add messages and load a session's whole history; it cannot read only the newest
messages or list sessions, so those workloads are n/a.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from benchmarks._data import Msg
from benchmarks._peers_agents import peer_sqlite_pragmas
from benchmarks._system import APPEND, CONCURRENT, READ_ALL, Family, unsupported
from benchmarks._targets import Store

MODULE = "langchain_community.chat_message_histories"


class LangChainSQLHistorySystem:
    """One ``SQLChatMessageHistory`` per conversation, all on one engine."""

    name = "langchain SQLChatMessageHistory"
    family: Family = "peer"
    abilities = frozenset({APPEND, READ_ALL, CONCURRENT})
    shares_schema = False

    async def start(self, store: Store) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self._history_class: Any = importlib.import_module(MODULE).SQLChatMessageHistory
        messages = importlib.import_module("langchain_core.messages")
        self._human, self._ai = messages.HumanMessage, messages.AIMessage
        self._engine = create_async_engine(store.async_url)
        if store.backend == "sqlite":
            sa.event.listen(self._engine.sync_engine, "connect", peer_sqlite_pragmas)

    async def conversation(self, owner: str) -> Any:
        history = self._history_class(f"{owner}-{uuid.uuid4().hex}", connection=self._engine)
        await history.aget_messages()  # creates its table
        return history

    async def append(self, conversation: Any, batch: Sequence[Msg]) -> None:
        await conversation.aadd_messages(
            [(self._human if m.role == "user" else self._ai)(content=m.text) for m in batch]
        )

    async def read_last(self, conversation: Any, n: int) -> list[str]:
        raise unsupported(self.name)

    async def read_all(self, conversation: Any) -> list[str]:
        return [str(m.content) for m in await conversation.aget_messages()]

    async def recent(self, owner: str, n: int) -> list[str | None]:
        raise unsupported(self.name)

    async def stop(self) -> None:
        await self._engine.dispose()
