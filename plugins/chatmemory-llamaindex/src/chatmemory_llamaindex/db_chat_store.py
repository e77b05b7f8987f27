"""``ChatMemoryDBChatStore``: chatmemory as the async store of LlamaIndex's ``Memory``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar
from uuid import UUID

from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base_db import AsyncDBChatStore, MessageStatus

from chatmemory import ConflictError, InvalidInputError, Message, MessageNotFound, Scope
from chatmemory_llamaindex._bound import DEFAULT_MODEL, BoundStore
from chatmemory_llamaindex._convert import from_stored

__all__ = ["ChatMemoryDBChatStore"]

T = TypeVar("T")

_ATTEMPTS = 20  # reads of a key whose message at a position other stores keep deleting first

ARCHIVED_FIELD = "llamaindex_archived"
"""The conversation metadata field counting its archived messages (always the oldest)."""


class ChatMemoryDBChatStore(BoundStore, AsyncDBChatStore):
    """A principal's conversations as the ``chat_store=`` of LlamaIndex's ``Memory``::

        store = ChatMemoryDBChatStore(memory.scoped(Principal("alice")))
        agent_memory = Memory.from_defaults(session_id="trip", chat_store=store)
        await agent.run("Hi", memory=agent_memory)

    Keys, runs and models are recorded as by ``ChatMemoryChatStore``. ``Memory`` archives
    the oldest messages when its token budget overflows: archived messages stay stored
    (and in the conversation's transcript) but are no longer ``ACTIVE``. Positions
    (``delete_message``'s ``idx``) count over all of a key's messages, archived first.

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
        return "ChatMemoryDBChatStore"

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self._home.call(coro)

    async def _change(self, change: Callable[[], Coroutine[Any, Any, T]]) -> T:
        # Every change here reads the key (and its archive watermark) before writing, and
        # some write twice (messages, then the watermark): reads wait for them to end.
        return await self._home.call(self._keyed.alone(change))

    # -- the archive watermark ---------------------------------------------------------------

    async def _split(self, key: str) -> tuple[list[Message], int]:
        """The stored messages of ``key`` and how many of them (the first) are archived."""

        async def read(cid: UUID) -> tuple[list[Message], int]:
            # The watermark and the messages it counts, from one snapshot.
            whole = await self._keyed.whole(cid)
            stored = list(whole.values)
            archived = whole.conversation.metadata.get(ARCHIVED_FIELD, 0)
            return stored, min(archived if isinstance(archived, int) else 0, len(stored))

        return await self._keyed.on_key(key, read, create=False, missing=([], 0))

    async def _set_archived(self, key: str, count: int) -> None:
        async def write(cid: UUID) -> None:
            conversation = await self._keyed.chat.get_conversation(cid)
            if conversation.metadata.get(ARCHIVED_FIELD, 0) != count:
                metadata = {**conversation.metadata, ARCHIVED_FIELD: count}
                await self._keyed.chat.update_conversation(cid, metadata=metadata)

        await self._keyed.on_key(key, write, create=count > 0, missing=None)

    @staticmethod
    def _select(
        stored: list[Message], archived: int, status: MessageStatus | None
    ) -> tuple[list[Message], int]:
        """The messages of ``status`` (all for ``None``) and the position of the first."""
        if status is None:
            return stored, 0
        if MessageStatus(status) is MessageStatus.ARCHIVED:
            return stored[:archived], 0
        return stored[archived:], archived

    # -- AsyncDBChatStore --------------------------------------------------------------------

    async def get_messages(
        self,
        key: str,
        status: MessageStatus | None = MessageStatus.ACTIVE,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[ChatMessage]:
        """The messages of ``key`` with ``status`` (all for ``None``), oldest first, from
        ``offset`` and at most ``limit``.

        Raises:
            InvalidInputError: a negative limit or offset.
        """
        for name, value in (("limit", limit), ("offset", offset)):
            if value is not None and value < 0:
                raise InvalidInputError(name, "must not be negative")
        stored, archived = await self._change(lambda: self._split(key))
        chosen, _ = self._select(stored, archived, status)
        start = offset or 0
        end = None if limit is None else start + limit
        return [from_stored(m) for m in chosen[start:end]]

    async def count_messages(self, key: str, status: MessageStatus | None = MessageStatus.ACTIVE) -> int:
        """How many messages of ``key`` have ``status`` (all for ``None``)."""
        stored, archived = await self._change(lambda: self._split(key))
        return len(self._select(stored, archived, status)[0])

    async def add_message(
        self, key: str, message: ChatMessage, status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        """Add ``message`` to ``key``: at the end when active, after the archived ones when
        archived.

        Raises:
            InvalidInputError: the message cannot be stored.
        """
        await self.add_messages(key, [message], status)

    async def add_messages(
        self, key: str, messages: list[ChatMessage], status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        """Add ``messages`` to ``key`` in order, like ``add_message``.

        Raises:
            InvalidInputError: a message cannot be stored.
        """
        await self._change(lambda: self._add(key, messages, MessageStatus(status)))

    async def _add(self, key: str, messages: list[ChatMessage], status: MessageStatus) -> None:
        if status is MessageStatus.ACTIVE:
            await self._keyed.append(key, messages)
            return
        _, archived = await self._split(key)
        await self._keyed.insert(key, archived, messages)
        await self._set_archived(key, archived + len(messages))

    async def set_messages(
        self, key: str, messages: list[ChatMessage], status: MessageStatus = MessageStatus.ACTIVE
    ) -> None:
        """Replace every message of ``key`` with ``messages``, all with ``status``.

        Raises:
            InvalidInputError: a message cannot be stored.
        """

        async def act() -> None:
            await self._keyed.replace(key, messages)
            archived = len(messages) if MessageStatus(status) is MessageStatus.ARCHIVED else 0
            await self._set_archived(key, archived)

        await self._change(act)

    async def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the message at position ``idx`` of ``key`` (archived messages first) and
        return it; ``None`` when there is none.

        Raises:
            ConflictError: other writers deleted the message at ``idx`` first, many times over.
        """

        async def act() -> ChatMessage | None:
            for _ in range(_ATTEMPTS):
                stored, archived = await self._split(key)
                try:
                    deleted = await self._keyed.delete_at(key, idx, stored=stored)
                except MessageNotFound:
                    continue  # another store deleted it first: read the key again
                if deleted is not None and (idx if idx >= 0 else idx + len(stored)) < archived:
                    await self._set_archived(key, archived - 1)
                return deleted
            raise ConflictError(f"key {key!r}: could not delete the message at {idx}; retry")

        return await self._change(act)

    async def delete_messages(self, key: str, status: MessageStatus | None = None) -> None:
        """Delete the messages of ``key`` with ``status``; for ``None``, its conversation."""

        async def act() -> None:
            if status is None:
                await self._keyed.drop(key)
                return
            stored, archived = await self._split(key)
            chosen, _ = self._select(stored, archived, status)
            for message in chosen:
                await self._keyed.chat.delete_message(message.id)
            if MessageStatus(status) is MessageStatus.ARCHIVED:
                await self._set_archived(key, 0)

        await self._change(act)

    async def delete_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        """Delete the oldest ``n`` active messages of ``key`` and return them."""

        async def act() -> list[ChatMessage]:
            stored, archived = await self._split(key)
            oldest = stored[archived : archived + max(n, 0)]
            for message in oldest:
                await self._keyed.chat.delete_message(message.id)
            return [from_stored(m) for m in oldest]

        return await self._change(act)

    async def archive_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        """Archive the oldest ``n`` active messages of ``key`` and return them."""

        async def act() -> list[ChatMessage]:
            stored, archived = await self._split(key)
            oldest = stored[archived : archived + max(n, 0)]
            if oldest:
                await self._set_archived(key, archived + len(oldest))
            return [from_stored(m) for m in oldest]

        return await self._change(act)

    async def get_keys(self) -> list[str]:
        """Every conversation of the principal as a key, oldest first."""
        return await self._call(self._keyed.keys())

    def close(self) -> None:
        """Stop the background loop this object started, if any."""
        self._home.close()
