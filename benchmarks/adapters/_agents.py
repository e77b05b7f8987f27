"""OpenAI Agents SDK: ``ChatMemorySession`` beside the SDK's ``SQLiteSession`` and ``SQLAlchemySession``.

A turn is one ``Runner.run`` of one agent with a session: the SDK reads the session's items,
calls the model with them and the new input, and saves the input and the reply.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa

from benchmarks._data import MODEL, Msg
from benchmarks._peers_agents import item, peer_sqlite_pragmas
from benchmarks._targets import SQLITE_PEER_PRAGMAS, Store
from benchmarks.adapters._seed import REPLY, import_turns, pairs
from chatmemory import ChatMemory, NewMessage, Principal
from chatmemory.scope import Scope

FRAMEWORK = "openai-agents"
AGENT = "assistant"


def _fake_model() -> Any:
    """An offline ``Model`` answering every call with the same message, counting the items it got.

    The SDK's ``ScriptedModel`` deep-copies every input twice and keeps every call, which at
    ten thousand items would be most of the turn and grow without bound; this one only counts.
    """
    from agents import ModelResponse, Usage
    from agents.models.interface import Model
    from agents.testing import assistant_message

    class CountingModel(Model):
        model = MODEL
        seen = 0

        async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
            self.seen = len(input) if isinstance(input, list) else 1
            return ModelResponse(
                output=[assistant_message(REPLY, item_id=f"msg_{uuid.uuid4().hex}")],
                usage=Usage(requests=1, input_tokens=10, output_tokens=4, total_tokens=14),
                response_id=None,
            )

        def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            raise NotImplementedError("W6 runs are not streamed")

    return CountingModel()


class _AgentTurns:
    """One agent on the counting model; tracing off so nothing leaves the machine."""

    def __init__(self) -> None:
        from agents import Agent, set_tracing_disabled

        set_tracing_disabled(True)
        self._model = _fake_model()
        self._agent: Any = Agent(name=AGENT, instructions="Be brief.", model=self._model)

    async def _run(self, session: Any, text: str) -> int:
        from agents import Runner

        await Runner.run(self._agent, text, session=session)
        return int(self._model.seen)


class _ChatMemoryAgents(_AgentTurns):
    async def start(self, store: Store) -> None:
        self._memory = await ChatMemory.open(store.url)
        self._chat: Scope = self._memory.scoped(Principal("w6"))

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        from chatmemory_openai_agents import NATIVE_FORMAT, ChatMemorySession

        def new(m: Msg) -> NewMessage:
            native = {"format": NATIVE_FORMAT, "data": item(m)}
            if m.role == "user":
                return NewMessage("user", m.text, native=native)
            return NewMessage("assistant", m.text, model=MODEL, metadata={"agent": AGENT}, native=native)

        conversation_id = await import_turns(
            self._chat,
            [[new(u), new(a)] for u, a in pairs(messages)],
            model=MODEL,
            metadata={"framework": FRAMEWORK, "agent": AGENT},
            system_prompts=["Be brief."],
        )
        return ChatMemorySession(self._chat, conversation_id)

    async def stop(self) -> None:
        await self._memory.close()


class SessionRunTurns(_ChatMemoryAgents):
    """``ChatMemorySession`` driven by its own ``session.run`` (which passes its hooks)."""

    async def turn(self, session: Any, text: str) -> int:
        await session.run(self._agent, text)
        return int(self._model.seen)


class RunnerRunTurns(_ChatMemoryAgents):
    """``ChatMemorySession`` passed as ``Runner.run(..., session=...)``, the SDK's standard wiring."""

    async def turn(self, session: Any, text: str) -> int:
        return await self._run(session, text)


class SQLiteSessionTurns(_AgentTurns):
    """The SDK's ``SQLiteSession`` on a file (WAL, synchronous=NORMAL like every system)."""

    async def start(self, store: Store) -> None:
        from agents import SQLiteSession

        class Session(SQLiteSession):
            @staticmethod
            def _configure_connection(conn: Any) -> None:
                SQLiteSession._configure_connection(conn)
                for pragma in SQLITE_PEER_PRAGMAS:
                    conn.execute(f"PRAGMA {pragma}")

        self._cls: Any = Session
        self._path = store.path
        self._sessions: list[Any] = []

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        session = self._cls(uuid.uuid4().hex, self._path)
        self._sessions.append(session)
        await session.add_items([item(m) for m in messages])
        return session

    async def turn(self, session: Any, text: str) -> int:
        return await self._run(session, text)

    async def stop(self) -> None:
        for session in self._sessions:
            session.close()


class SQLAlchemySessionTurns(_AgentTurns):
    """The SDK's ``SQLAlchemySession`` on one async engine (aiosqlite or asyncpg)."""

    async def start(self, store: Store) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self._engine = create_async_engine(store.async_url)
        if store.backend == "sqlite":
            sa.event.listen(self._engine.sync_engine, "connect", peer_sqlite_pragmas)

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        from agents.extensions.memory import SQLAlchemySession

        session: Any = SQLAlchemySession(uuid.uuid4().hex, engine=self._engine, create_tables=True)
        await session.add_items([item(m) for m in messages])
        return session

    async def turn(self, session: Any, text: str) -> int:
        return await self._run(session, text)

    async def stop(self) -> None:
        await self._engine.dispose()
