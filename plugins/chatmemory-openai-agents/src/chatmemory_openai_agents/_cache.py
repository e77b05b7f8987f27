"""The conversation's items as a session last read them, brought up to date by one small read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from agents.items import TResponseInputItem

from chatmemory import Message
from chatmemory.mirror import ConversationMirror
from chatmemory.scope import Scope
from chatmemory_openai_agents._items import items_of_messages, message_is_answer
from chatmemory_openai_agents._record import Newest

__all__ = ["ItemCache"]


def _texts(messages: Sequence[Message]) -> list[str]:
    """Each message's items as JSON, without the enclosing brackets (``""`` for none)."""
    return [json.dumps(items_of_messages([m]), separators=(",", ":"))[1:-1] for m in messages]


class ItemCache:
    """Every item of one conversation, kept between reads and checked against the store each time
    (see :class:`chatmemory.mirror.ConversationMirror`). Items are kept as JSON text, so every
    read returns new objects the caller may change."""

    def __init__(self) -> None:
        self._mirror = ConversationMirror(_texts)

    def wrote(self, count: int) -> None:
        """This session appended ``count`` messages: the next read asks for that many more."""
        self._mirror.wrote(count)

    async def items(self, chat: Scope, conversation_id: Any) -> tuple[list[TResponseInputItem], Newest]:
        """Every item of the conversation, in order, as new objects, and its newest message.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        texts, last = await self._mirror.read(chat, conversation_id)
        body = ",".join(text for text in texts if text)
        newest = Newest(last.history_id, message_is_answer(last)) if last is not None else Newest(None)
        return cast(list[TResponseInputItem], json.loads(f"[{body}]")), newest
