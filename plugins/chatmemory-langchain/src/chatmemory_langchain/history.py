"""``ChatMemoryHistory``: a chatmemory conversation as a legacy LangChain chat message history."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from chatmemory import ChatMemoryError, NewMessage
from chatmemory.loops import BackgroundLoop, HomeLoop
from chatmemory.mirror import ConversationMirror, Handouts
from chatmemory.recording import added_metadata, fitted, model_label, settled
from chatmemory.scope import Scope
from chatmemory_langchain._convert import copy_of, from_stored_many, to_new_message
from chatmemory_langchain.middleware import SYNC_HINT

__all__ = ["ChatMemoryHistory"]

T = TypeVar("T")

# Messages per store call, well under the store's default cap (1,000): a chain may hand
# ``add_messages`` any number at once (a whole earlier conversation, say).
_BATCH = 500


def _itself(message: BaseMessage) -> BaseMessage:
    return message  # a kept message is its own pristine copy


class ChatMemoryHistory(BaseChatMessageHistory):
    """A conversation as a ``BaseChatMessageHistory``, for ``RunnableWithMessageHistory`` and
    other legacy chains (LangChain itself deprecates this interface; new code should use
    ``ChatMemoryMiddleware`` with ``create_agent``).

    Each ``add_messages`` call (one chain invocation: the input and the reply) is recorded
    as one completed history driven by ``model``, in one transaction (more than 500 messages
    in several, dropped again if one fails): all of it or nothing.
    Reading returns the whole conversation in order; the messages read before are reused
    once one small read proves them current, so a long conversation is not converted anew
    on every turn (see the package README).
    Event loops work as for ``ChatMemoryMiddleware``: store calls go to ``loop``, else the
    loop running at creation, else a background loop (shared over a store opened from a URL;
    ``chatmemory.loops``).

    Args:
        chat: the principal's scope.
        conversation_id: the conversation to read and extend.
        model: the model the chain runs, recorded on each history.
        metadata: merged into each history's metadata.
        loop: the home loop (or ``BackgroundLoop``): the one a ``ChatMemory(engine)`` over your
            own asyncpg engine belongs to.

    Raises:
        InvalidInputError: ``metadata`` is not a JSON object.
    """

    def __init__(
        self,
        chat: Scope,
        conversation_id: UUID | str,
        *,
        model: str,
        metadata: Mapping[str, Any] | None = None,
        loop: asyncio.AbstractEventLoop | BackgroundLoop | None = None,
    ) -> None:
        super().__init__()
        self.chat = chat
        self.conversation_id = conversation_id
        self.model = model
        self.metadata = {**added_metadata(metadata), "framework": "langchain"}
        self._home = HomeLoop(loop, hint=SYNC_HINT, any_loop=chat.any_loop)
        self._mirror = ConversationMirror(from_stored_many)
        # Copies of the kept messages, each handed out again while it still equals its kept one.
        self._handouts: Handouts[BaseMessage, BaseMessage] = Handouts(copy_of, _itself, size=1)

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._home.call_sync(coro)

    async def _read(self) -> list[BaseMessage]:
        kept, _ = await self._mirror.read(self.chat, self.conversation_id)
        return self._handouts.hand_out(kept)

    async def _add(self, messages: Sequence[BaseMessage]) -> None:
        if not messages:
            return
        # Like InMemoryChatMessageHistory, every message given is added, even one whose id is
        # already stored or repeated in the same call: ids do not make these adds idempotent.
        batch = [fitted(to_new_message(m, keyed=False), self.chat.limits) for m in messages]
        model = model_label(self.model) or self.model
        if len(batch) <= self.chat.limits.batch_size(_BATCH):
            await self.chat.record_run(
                self.conversation_id, model=model, messages=batch, metadata=self.metadata
            )
        else:
            # A caller cancelled meanwhile waits for the parts to be written (as a cancel that
            # comes once one store call started does), then the cancel goes on: all or nothing.
            await settled(self._add_in_parts(batch, model))
        self._mirror.wrote(len(batch))

    async def _add_in_parts(self, batch: list[NewMessage], model: str) -> None:
        """Record more messages than one store call takes as one history, in several calls; a
        refused part drops the history, so all of them are added or none."""
        size = self.chat.limits.batch_size(_BATCH)
        started = await self.chat.start_run(
            self.conversation_id, model=model, messages=batch[:size], metadata=self.metadata
        )
        hid = started.history.id
        try:
            rest = batch[size:]
            while len(rest) > size:
                await self.chat.append_messages(hid, rest[:size])
                rest = rest[size:]
            await self.chat.finish_run(hid, messages=rest)
        except BaseException:
            with contextlib.suppress(ChatMemoryError):
                await settled(self.chat.delete_history(hid))
            raise

    async def _clear(self) -> None:
        conversation = await self.chat.get_conversation(self.conversation_id)
        for history in conversation.histories:
            await self.chat.delete_history(history.id)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Every message of the conversation, in order.

        Raises:
            ConversationNotFound: the conversation is not visible to the principal.
        """
        return self._sync(self._read())

    async def aget_messages(self) -> list[BaseMessage]:
        """Every message of the conversation, in order.

        Raises:
            ConversationNotFound: the conversation is not visible to the principal.
        """
        return await self._home.call(self._read())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Record ``messages`` as one history.

        Raises:
            ConversationNotFound: the conversation is not visible to the principal.
            InvalidInputError: a message cannot be stored.
        """
        self._sync(self._add(messages))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Record ``messages`` as one history.

        Raises:
            ConversationNotFound: the conversation is not visible to the principal.
            InvalidInputError: a message cannot be stored.
        """
        # A caller cancelled once the add began waits for its end, on whichever loop it runs.
        await self._home.call(self._add(messages), finish=True)

    def clear(self) -> None:
        """Delete every history of the conversation (the conversation itself stays).

        Raises:
            ConversationNotFound: the conversation is not visible to the principal.
        """
        self._sync(self._clear())

    async def aclear(self) -> None:
        """Delete every history of the conversation (the conversation itself stays).

        Raises:
            ConversationNotFound: the conversation is not visible to the principal.
        """
        await self._home.call(self._clear())

    def close(self) -> None:
        """Stop the background loop this object started, if any."""
        self._home.close()
