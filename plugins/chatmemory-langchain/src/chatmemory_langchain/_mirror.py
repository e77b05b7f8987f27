"""A conversation's messages as last read, brought up to date by one small read."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.messages import BaseMessage

from chatmemory import ConversationSummary, Message
from chatmemory.scope import Scope
from chatmemory_langchain._convert import from_stored_many

__all__ = ["Mirror"]

_OVERLAP = 1  # newest messages read beyond those expected: the newest mirrored one, if still there


@dataclass(frozen=True)
class _State:
    ids: tuple[tuple[UUID, int], ...]  # (id, seq) of each live message
    messages: tuple[BaseMessage, ...]
    pending: bool  # a mirrored message is pending: completing it changes no count
    last_seq: int  # the conversation's last seq when read
    count: int  # its live message count then
    updated_at: object  # its updated_at then


class Mirror:
    """Every message of one conversation as LangChain messages, checked against the store on each read.

    Each read asks the store, in one transaction, for the conversation's last ``seq``, its
    live message count and its newest few messages. The mirrored messages are reused only
    when they provably still hold: every message appended since is among those read, the
    newest mirrored ones are still there, and the count shows none was deleted. A pending
    message in the mirror makes any change reload the conversation whole, as does anything
    the check cannot prove. Reads return copies the caller may change.
    """

    def __init__(self) -> None:
        self._state: _State | None = None
        self._guard = threading.Lock()
        self._written = 0  # messages appended through this object since the last read

    def wrote(self, count: int) -> None:
        """``count`` messages were appended: the next read asks for that many more."""
        with self._guard:
            self._written += count

    async def messages(self, chat: Scope, conversation_id: UUID | str) -> list[BaseMessage]:
        """Every live message of the conversation, in order, as new objects.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        with self._guard:
            state, written, self._written = self._state, self._written, 0
        fresh = await _refresh(chat, conversation_id, state, written) if state is not None else None
        if fresh is None:
            tail = await chat.get_tail(conversation_id)
            empty = _State((), (), False, 0, 0, None)
            fresh = _extend(empty, tail.messages, tail.last_seq, tail.conversation)
        with self._guard:
            self._state = fresh
        return [message.model_copy(deep=True) for message in fresh.messages]


async def _refresh(chat: Scope, conversation_id: Any, state: _State, written: int) -> _State | None:
    """``state`` brought up to date, or ``None`` when only a whole read can tell."""
    limit = written + _OVERLAP
    for _ in range(2):
        tail = await chat.get_tail(conversation_id, limit=limit)
        summary = tail.conversation
        if (tail.last_seq, summary.message_count, summary.updated_at) == (
            state.last_seq,
            state.count,
            state.updated_at,
        ):
            return state
        newer = [m for m in tail.messages if m.seq > state.last_seq]
        overlap = tail.messages[: len(tail.messages) - len(newer)]
        if overlap or len(tail.messages) < limit:
            return _checked(state, newer, overlap, tail.last_seq, summary)
        # More was appended than asked for: at most one message per seq since the mirrored one.
        limit = tail.last_seq - state.last_seq + _OVERLAP
    return None


def _checked(
    state: _State, newer: list[Message], overlap: list[Message], last_seq: int, summary: ConversationSummary
) -> _State | None:
    if state.pending:
        return None  # a pending message may have been completed or failed since
    if state.count + len(newer) != summary.message_count:
        return None  # a mirrored message was deleted
    mirrored = state.ids[len(state.ids) - len(overlap) :] if overlap else ()
    if list(mirrored) != [(m.id, m.seq) for m in overlap]:
        return None
    return _extend(state, newer, last_seq, summary)


def _extend(state: _State, stored: list[Message], last_seq: int, summary: ConversationSummary) -> _State:
    """``state`` with ``stored`` appended, as of the conversation read with them."""
    return _State(
        ids=state.ids + tuple((m.id, m.seq) for m in stored),
        messages=state.messages + tuple(from_stored_many(stored)),
        pending=state.pending or any(m.status == "pending" for m in stored),
        last_seq=last_seq,
        count=summary.message_count,
        updated_at=summary.updated_at,
    )
