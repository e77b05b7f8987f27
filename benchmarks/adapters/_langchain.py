"""LangChain: ``ChatMemoryMiddleware`` and ``ChatMemoryHistory`` beside LangChain's chat message histories.

Two wirings, each with every store:

- agent: a ``create_agent`` agent. chatmemory's middleware loads and records by itself; a
  LangChain history is read before ``ainvoke`` and given the run's new messages after it,
  which is what an agent without a checkpointer needs.
- chain: ``RunnableWithMessageHistory`` around a prompt and the model, with the store as its
  session history (chatmemory's ``ChatMemoryHistory`` or LangChain's own).

The stores: ``InMemoryChatMessageHistory`` (a list in memory: the floor), langchain-community's
``SQLChatMessageHistory`` on an async engine, and langchain-postgres'
``PostgresChatMessageHistory`` on a psycopg connection.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from benchmarks._data import MODEL, Msg
from benchmarks._peers_agents import peer_sqlite_pragmas
from benchmarks._targets import Store
from benchmarks.adapters._seed import REPLY, import_turns
from chatmemory import ChatMemory, Principal

FRAMEWORK = "langchain"
SYSTEM = "Be brief."
_TABLE = "w6_chat_history"


def _messages(messages: Sequence[Msg]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage

    return [
        HumanMessage(m.text, id=str(uuid.uuid4()))
        if m.role == "user"
        else AIMessage(m.text, id=str(uuid.uuid4()), response_metadata={"model_name": MODEL})
        for m in messages
    ]


def _fake_model() -> Any:
    """LangChain's ``GenericFakeChatModel`` answering every call alike and counting the
    conversation messages (all but the system prompt) it was sent."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    class CountingChat(GenericFakeChatModel):
        messages: Iterator[Any]
        model_name: str = MODEL
        seen: int = 0

        def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
            self.seen = sum(1 for m in messages if m.type != "system")
            return super()._generate(messages, *args, **kwargs)

    return CountingChat(messages=itertools.cycle([REPLY]))


class Histories(Protocol):
    """Where a wiring keeps its conversations: one chat message history each."""

    async def start(self, store: Store) -> None:
        """Connect to ``store``."""

    async def new(self, messages: Sequence[Msg]) -> Any:
        """A ``BaseChatMessageHistory`` already holding ``messages``."""

    async def stop(self) -> None:
        """Release connections."""


class InMemoryHistories:
    """``InMemoryChatMessageHistory``."""

    async def start(self, store: Store) -> None:
        pass

    async def new(self, messages: Sequence[Msg]) -> Any:
        from langchain_core.chat_history import InMemoryChatMessageHistory

        history = InMemoryChatMessageHistory()
        history.add_messages(_messages(messages))
        return history

    async def stop(self) -> None:
        pass


class SQLHistories:
    """langchain-community's ``SQLChatMessageHistory`` on one async engine."""

    async def start(self, store: Store) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self._engine = create_async_engine(store.async_url)
        if store.backend == "sqlite":
            sa.event.listen(self._engine.sync_engine, "connect", peer_sqlite_pragmas)

    async def new(self, messages: Sequence[Msg]) -> Any:
        from langchain_community.chat_message_histories import SQLChatMessageHistory

        history = SQLChatMessageHistory(uuid.uuid4().hex, connection=self._engine)
        await history.aadd_messages(_messages(messages))
        return history

    async def stop(self) -> None:
        await self._engine.dispose()


class PostgresHistories:
    """langchain-postgres' ``PostgresChatMessageHistory`` on one psycopg async connection."""

    async def start(self, store: Store) -> None:
        import psycopg
        from langchain_postgres import PostgresChatMessageHistory

        self._connection = await psycopg.AsyncConnection.connect(store.url)
        await PostgresChatMessageHistory.acreate_tables(self._connection, _TABLE)

    async def new(self, messages: Sequence[Msg]) -> Any:
        from langchain_postgres import PostgresChatMessageHistory

        history = PostgresChatMessageHistory(_TABLE, str(uuid.uuid4()), async_connection=self._connection)
        await history.aadd_messages(_messages(messages))
        return history

    async def stop(self) -> None:
        await self._connection.close()


class ChatMemoryHistories:
    """chatmemory's ``ChatMemoryHistory`` over a conversation stored as its adapter stores it."""

    async def start(self, store: Store) -> None:
        self._memory = await ChatMemory.open(store.url)
        self.chat = self._memory.scoped(Principal("w6"))

    async def conversation(self, messages: Sequence[Msg]) -> uuid.UUID:
        """A stored conversation in the middleware's and the history's form: one history per turn."""
        from chatmemory_langchain import to_new_message

        native = [to_new_message(m) for m in _messages(messages)]
        return await import_turns(
            self.chat,
            [native[i : i + 2] for i in range(0, len(native) - 1, 2)],
            model=MODEL,
            metadata={"framework": FRAMEWORK},
            system_prompts=[SYSTEM],
        )

    async def new(self, messages: Sequence[Msg]) -> Any:
        from chatmemory_langchain import ChatMemoryHistory

        return ChatMemoryHistory(self.chat, await self.conversation(messages), model=MODEL)

    async def stop(self) -> None:
        await self._memory.close()


class AgentTurns:
    """``create_agent`` with a chat message history read before and extended after each run."""

    def __init__(self, histories: Histories) -> None:
        from langchain.agents import create_agent

        self._histories = histories
        self._model = _fake_model()
        self._agent: Any = create_agent(self._model, [], system_prompt=SYSTEM)

    async def start(self, store: Store) -> None:
        await self._histories.start(store)

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        return await self._histories.new(messages)

    async def turn(self, history: Any, text: str) -> int:
        from langchain_core.messages import HumanMessage

        past = await history.aget_messages()
        result = await self._agent.ainvoke({"messages": [*past, HumanMessage(text)]})
        await history.aadd_messages(result["messages"][len(past) :])
        return int(self._model.seen)

    async def stop(self) -> None:
        await self._histories.stop()


class MiddlewareTurns:
    """``create_agent(..., middleware=[ChatMemoryMiddleware(chat, conversation_id)])``, one agent
    per conversation."""

    def __init__(self) -> None:
        self._store = ChatMemoryHistories()
        self._model = _fake_model()

    async def start(self, store: Store) -> None:
        await self._store.start(store)

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        from chatmemory_langchain import ChatMemoryMiddleware
        from langchain.agents import create_agent

        conversation_id = await self._store.conversation(messages)
        middleware = ChatMemoryMiddleware(self._store.chat, conversation_id)
        return create_agent(self._model, [], system_prompt=SYSTEM, middleware=[middleware])

    async def turn(self, agent: Any, text: str) -> int:
        await agent.ainvoke({"messages": [{"role": "user", "content": text}]})
        return int(self._model.seen)

    async def stop(self) -> None:
        await self._store.stop()


class ChainTurns:
    """``RunnableWithMessageHistory`` around ``prompt | model``, with the store as its session history."""

    def __init__(self, histories: Histories) -> None:
        from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
        from langchain_core.runnables.history import RunnableWithMessageHistory

        self._histories = histories
        self._model = _fake_model()
        self._sessions: dict[str, Any] = {}
        prompt = ChatPromptTemplate.from_messages(
            [("system", SYSTEM), MessagesPlaceholder("history"), ("human", "{input}")]
        )

        def session_history(session_id: str) -> Any:
            return self._sessions[session_id]

        self._chain = RunnableWithMessageHistory(
            prompt | self._model,
            session_history,
            input_messages_key="input",
            history_messages_key="history",
        )

    async def start(self, store: Store) -> None:
        await self._histories.start(store)

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        session_id = uuid.uuid4().hex
        self._sessions[session_id] = await self._histories.new(messages)
        return session_id

    async def turn(self, session_id: str, text: str) -> int:
        await self._chain.ainvoke({"input": text}, config={"configurable": {"session_id": session_id}})
        return int(self._model.seen)

    async def stop(self) -> None:
        self._sessions.clear()
        await self._histories.stop()
