"""``ChatMemoryChatStore``: chatmemory as a LlamaIndex ``BaseChatStore``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store import BaseChatStore

from chatmemory import Scope
from chatmemory_llamaindex._bound import DEFAULT_MODEL, BoundStore

__all__ = ["ChatMemoryChatStore"]

T = TypeVar("T")


class ChatMemoryChatStore(BoundStore, BaseChatStore):
    """A principal's conversations as a LlamaIndex ``BaseChatStore``, e.g. the ``chat_store=``
    of ``ChatMemoryBuffer``::

        store = ChatMemoryChatStore(memory.scoped(Principal("alice")))
        buffer = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="trip")
        await agent.run("Hi", memory=buffer)

    Each key is one conversation of the principal: the one started for that key, or the
    one whose id the key is (an empty key is an ``InvalidInputError``). Every agent run (a
    workflow run, told by LlamaIndex instrumentation) is recorded as one history, with the
    model that instrumentation saw answer, else ``model``. Store calls go to the object's home
    loop (``loop``, else the loop running at creation, else a background loop, shared over a
    store opened from a URL), by the rules of ``chatmemory.loops``: synchronous methods work from any thread
    but the home loop's own, where they raise ``RuntimeError`` at once, and no call waits for
    a home loop that is idle, closed or blocked.

    Args:
        chat: the principal's scope.
        model: the model recorded for runs whose LLM is not observed.
        metadata: merged into each history's metadata.
        loop: the home loop: the one a ``ChatMemory(engine)`` over your own asyncpg engine
            belongs to.

    Raises:
        InvalidInputError: ``metadata`` is not a JSON object.
    """

    def __init__(
        self,
        chat: Scope,
        *,
        model: str = DEFAULT_MODEL,
        metadata: Mapping[str, Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._bind(chat, model, metadata, loop)

    @classmethod
    def class_name(cls) -> str:
        """The store's name in LlamaIndex serialisations."""
        return "ChatMemoryChatStore"

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._home.call_sync(coro)

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace every message of ``key`` with ``messages`` (recorded as one history).

        Raises:
            InvalidInputError: a message cannot be stored.
        """
        self._sync(self._keyed.alone(lambda: self._keyed.replace(key, messages)))

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace every message of ``key`` with ``messages`` (recorded as one history).

        Raises:
            InvalidInputError: a message cannot be stored.
        """
        await self._home.call(self._keyed.alone(lambda: self._keyed.replace(key, messages)))

    def get_messages(self, key: str) -> list[ChatMessage]:
        """The messages of ``key`` in order (none for an unknown key)."""
        return self._sync(self._keyed.alone(lambda: self._keyed.messages(key)))

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        """The messages of ``key`` in order (none for an unknown key)."""
        return await self._home.call(self._keyed.alone(lambda: self._keyed.messages(key)))

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Add ``message`` at the end of ``key``, or before position ``idx``.

        Raises:
            InvalidInputError: the message cannot be stored.
        """
        self._sync(self._keyed.alone(lambda: self._add(key, message, idx)))

    async def async_add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Add ``message`` at the end of ``key``, or before position ``idx``.

        Raises:
            InvalidInputError: the message cannot be stored.
        """
        await self._home.call(self._keyed.alone(lambda: self._add(key, message, idx)))

    async def _add(self, key: str, message: ChatMessage, idx: int | None) -> None:
        if idx is None:
            await self._keyed.append(key, [message])
        else:
            await self._keyed.insert(key, idx, [message])

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete the conversation of ``key``; its messages, or ``None`` for an unknown key."""
        return self._sync(self._keyed.alone(lambda: self._keyed.drop(key)))

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete the conversation of ``key``; its messages, or ``None`` for an unknown key."""
        return await self._home.call(self._keyed.alone(lambda: self._keyed.drop(key)))

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the message at position ``idx`` of ``key``; ``None`` when there is none."""
        return self._sync(self._keyed.alone(lambda: self._keyed.delete_at(key, idx)))

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the message at position ``idx`` of ``key``; ``None`` when there is none."""
        return await self._home.call(self._keyed.alone(lambda: self._keyed.delete_at(key, idx)))

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the last message of ``key``; ``None`` when it has none."""
        return self._sync(self._keyed.alone(lambda: self._keyed.delete_at(key, -1)))

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the last message of ``key``; ``None`` when it has none."""
        return await self._home.call(self._keyed.alone(lambda: self._keyed.delete_at(key, -1)))

    def get_keys(self) -> list[str]:
        """Every conversation of the principal as a key, oldest first."""
        return self._sync(self._keyed.keys())

    async def aget_keys(self) -> list[str]:
        """Every conversation of the principal as a key, oldest first."""
        return await self._home.call(self._keyed.keys())

    def close(self) -> None:
        """Stop the background loop this object started, if any."""
        self._home.close()
