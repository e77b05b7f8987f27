"""LlamaIndex: ``ChatMemoryChatStore`` and ``ChatMemoryDBChatStore`` beside LlamaIndex's own chat stores.

A turn is one ``FunctionAgent.run(user_msg=..., memory=...)``: the agent puts the input in its
memory, reads the memory back (the whole stored conversation), calls the model with the
system prompt and those messages, puts the reply in the memory and reads it once more. Two
wirings, as the adapter's README documents them, each with the stores that fit it:

- ``ChatMemoryBuffer`` over a ``BaseChatStore``: chatmemory's ``ChatMemoryChatStore``, or
  LlamaIndex's ``SimpleChatStore`` (a dict in memory: the floor). LlamaIndex marks
  ``ChatMemoryBuffer`` deprecated but keeps it; it is what takes a ``BaseChatStore``.
- ``Memory`` (LlamaIndex's current memory) over an ``AsyncDBChatStore``: chatmemory's
  ``ChatMemoryDBChatStore``, or ``SQLAlchemyChatStore`` on an async engine, the store
  ``Memory`` uses by default. ``Memory`` also reads the active messages again after each
  write to check its token budget, so a turn there reads the conversation four times.

Both memories get a token limit no conversation here reaches (``TOKEN_LIMIT``), so nothing
is cut or archived and the model is sent everything; they still count the tokens each read.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from benchmarks._data import MODEL, Msg
from benchmarks._peers_agents import peer_sqlite_pragmas
from benchmarks._targets import Store
from benchmarks.adapters._seed import REPLY, import_turns
from chatmemory import ChatMemory, Principal

FRAMEWORK = "llamaindex"  # what the adapter writes in each history's metadata
SYSTEM = "Be brief."
# Tokens either memory keeps before it drops (ChatMemoryBuffer, by default 3,000) or archives
# (Memory, past 70% of by default 30,000) the oldest messages. The 10,000 stored messages
# are about 1.5 million tokens (~300 random letters each); this is room for 300,000 or more.
TOKEN_LIMIT = 100_000_000
_TABLE = "llama_index_memory"  # Memory's default table for SQLAlchemyChatStore
_BATCH = 500  # messages per seeding insert: one multi-row INSERT binds 6 parameters a message


def _chat_messages(messages: Sequence[Msg]) -> list[Any]:
    from llama_index.core.llms import ChatMessage, MessageRole

    return [
        ChatMessage(role=MessageRole.USER if m.role == "user" else MessageRole.ASSISTANT, content=m.text)
        for m in messages
    ]


def _fake_model() -> Any:
    """LlamaIndex's ``MockFunctionCallingLLM`` answering every call at once with ``REPLY`` and
    counting the conversation messages (all but system messages) it was sent.

    Its own response generator (used when none is given) keeps every tool call it sees; this
    one keeps only the last count. It names its model, as a real LLM does, so the chatmemory
    stores record it through LlamaIndex's instrumentation.
    """
    from llama_index.core.base.llms.types import LLMMetadata
    from llama_index.core.llms import ChatMessage, MessageRole
    from llama_index.core.llms.mock import MockFunctionCallingLLM, ResponseGenerator
    from pydantic import Field

    class CountingLLM(MockFunctionCallingLLM):
        model_name: str = MODEL
        seen: int = Field(default=0, exclude=True)

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(is_chat_model=True, is_function_calling_model=True, model_name=self.model_name)

        def _get_response_generator(self) -> ResponseGenerator:
            return self._respond

        def _respond(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
            self.seen = sum(1 for m in messages if m.role != MessageRole.SYSTEM)
            return ChatMessage(role=MessageRole.ASSISTANT, content=REPLY)

    return CountingLLM(is_chat_model=True)


def _buffer(chat_store: Any, key: str) -> Any:
    from llama_index.core.memory import ChatMemoryBuffer

    return ChatMemoryBuffer.from_defaults(chat_store=chat_store, chat_store_key=key, token_limit=TOKEN_LIMIT)


def _memory(chat_store: Any, key: str) -> Any:
    from llama_index.core.memory import Memory

    return Memory.from_defaults(session_id=key, chat_store=chat_store, token_limit=TOKEN_LIMIT)


class _AgentTurns:
    """One ``FunctionAgent`` (no tools) on the counting model; a conversation is its memory."""

    def __init__(self) -> None:
        from llama_index.core.agent.workflow import FunctionAgent

        self._llm = _fake_model()
        self._agent: Any = FunctionAgent(tools=[], llm=self._llm, system_prompt=SYSTEM)

    async def turn(self, memory: Any, text: str) -> int:
        await self._agent.run(user_msg=text, memory=memory)
        return int(self._llm.seen)


class _ChatMemoryTurns(_AgentTurns):
    """A chatmemory chat store on ``ChatMemory.open(url)``; a conversation is stored as the
    adapter records agent runs (one history per turn, each message with its LlamaIndex JSON)
    and opened by its id as the key."""

    def _chat_store(self, chat: Any) -> Any:
        raise NotImplementedError

    async def start(self, store: Store) -> None:
        self._memory = await ChatMemory.open(store.url)
        self._store = self._chat_store(self._memory.scoped(Principal("w6")))

    async def _key(self, messages: Sequence[Msg]) -> str:
        from chatmemory_llamaindex._convert import to_new_message

        native = [to_new_message(m, model=MODEL) for m in _chat_messages(messages)]
        conversation_id = await import_turns(
            self._store.chat,
            [native[i : i + 2] for i in range(0, len(native) - 1, 2)],
            model=MODEL,
            metadata={"framework": FRAMEWORK},
            system_prompts=[SYSTEM],
        )
        return str(conversation_id)

    async def stop(self) -> None:
        self._store.close()
        await self._memory.close()


class ChatStoreTurns(_ChatMemoryTurns):
    """``ChatMemoryBuffer`` over ``ChatMemoryChatStore``, the README's ``BaseChatStore`` wiring
    (``token_limit=TOKEN_LIMIT``: the buffer keeps the newest messages under its limit, by
    default 3,000 tokens)."""

    def _chat_store(self, chat: Any) -> Any:
        from chatmemory_llamaindex import ChatMemoryChatStore

        # By keyword: pydantic's mypy plugin types the model's __init__ as keyword-only.
        return ChatMemoryChatStore(chat=chat)

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        return _buffer(self._store, await self._key(messages))


class DBChatStoreTurns(_ChatMemoryTurns):
    """``Memory`` over ``ChatMemoryDBChatStore``, the README's wiring for the newer ``Memory``
    (``token_limit=TOKEN_LIMIT``: ``Memory`` archives the oldest messages past 70% of its
    limit, by default 30,000 tokens)."""

    def _chat_store(self, chat: Any) -> Any:
        from chatmemory_llamaindex import ChatMemoryDBChatStore

        # By keyword: pydantic's mypy plugin types the model's __init__ as keyword-only.
        return ChatMemoryDBChatStore(chat=chat)

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        return _memory(self._store, await self._key(messages))


class SimpleChatStoreTurns(_AgentTurns):
    """``ChatMemoryBuffer`` over LlamaIndex's ``SimpleChatStore`` (a dict of lists in memory),
    one key per conversation (``token_limit=TOKEN_LIMIT``, as for ``ChatStoreTurns``)."""

    async def start(self, store: Store) -> None:
        from llama_index.core.storage.chat_store import SimpleChatStore

        self._store: Any = SimpleChatStore()

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        key = uuid.uuid4().hex
        self._store.set_messages(key, _chat_messages(messages))
        return _buffer(self._store, key)

    async def stop(self) -> None:
        self._store.store.clear()


class SQLAlchemyChatStoreTurns(_AgentTurns):
    """``Memory`` over LlamaIndex's ``SQLAlchemyChatStore`` on one async engine (aiosqlite with
    the peers' pragmas, or asyncpg), one table and a key per conversation
    (``token_limit=TOKEN_LIMIT``, as for ``DBChatStoreTurns``)."""

    async def start(self, store: Store) -> None:
        from llama_index.core.storage.chat_store.sql import SQLAlchemyChatStore
        from sqlalchemy.ext.asyncio import create_async_engine

        self._engine = create_async_engine(store.async_url)
        if store.backend == "sqlite":
            sa.event.listen(self._engine.sync_engine, "connect", peer_sqlite_pragmas)
        self._store: Any = SQLAlchemyChatStore(table_name=_TABLE, async_engine=self._engine)

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        key = uuid.uuid4().hex
        chat = _chat_messages(messages)
        for start in range(0, len(chat), _BATCH):
            await self._store.add_messages(key, chat[start : start + _BATCH])
        return _memory(self._store, key)

    async def stop(self) -> None:
        await self._engine.dispose()
