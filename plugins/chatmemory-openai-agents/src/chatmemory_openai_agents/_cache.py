"""The conversation's items as a session last read them, brought up to date by one small read."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from agents.items import TResponseInputItem

from chatmemory import ConversationSummary, Message
from chatmemory.scope import Scope
from chatmemory_openai_agents._items import items_of_messages, message_is_answer
from chatmemory_openai_agents._record import Newest

__all__ = ["ItemCache"]

_OVERLAP = 1  # newest messages read beyond those expected: the newest cached one, if still there


@dataclass(frozen=True)
class _Entry:
    id: UUID
    seq: int
    pending: bool
    newest: Newest  # what this message tells when it is the newest
    text: str  # the message's items as JSON, without the enclosing brackets ("" for none)


@dataclass(frozen=True)
class _State:
    entries: tuple[_Entry, ...]
    pending: bool  # an entry is pending: completing it changes no count
    last_seq: int  # the conversation's last seq when read
    count: int  # its live message count then
    updated_at: object  # its updated_at then


class ItemCache:
    """Every item of one conversation, kept between reads and checked against the store each time.

    Each read asks the store, in one transaction, for the conversation's last ``seq``, its
    live message count and its newest few messages. The cached items are reused only when
    they provably still hold: every message appended since is among those read, the
    newest cached messages are still there, and the count shows no cached message was
    deleted. A pending message in the cache (its completion changes no count) makes any
    change reload the conversation whole, as does anything the check cannot prove.

    Items are kept as JSON text, so every read returns new objects the caller may change.
    """

    def __init__(self) -> None:
        self._state: _State | None = None
        self._guard = threading.Lock()
        self._written = 0  # messages this session appended since the last read

    def wrote(self, count: int) -> None:
        """This session appended ``count`` messages: the next read asks for that many more."""
        with self._guard:
            self._written += count

    async def items(self, chat: Scope, conversation_id: Any) -> tuple[list[TResponseInputItem], Newest]:
        """Every item of the conversation, in order, as new objects, and its newest message.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        with self._guard:
            state, written, self._written = self._state, self._written, 0
        fresh = await _refresh(chat, conversation_id, state, written) if state is not None else None
        if fresh is None:
            tail = await chat.get_tail(conversation_id)
            fresh = _extend(_State((), False, 0, 0, None), tail.messages, tail.last_seq, tail.conversation)
        with self._guard:
            self._state = fresh
        body = ",".join(entry.text for entry in fresh.entries if entry.text)
        newest = fresh.entries[-1].newest if fresh.entries else Newest(None)
        return cast(list[TResponseInputItem], json.loads(f"[{body}]")), newest


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
        # More was appended than asked for: at most one message per seq since the cached one.
        limit = tail.last_seq - state.last_seq + _OVERLAP
    return None


def _checked(
    state: _State, newer: list[Message], overlap: list[Message], last_seq: int, summary: ConversationSummary
) -> _State | None:
    if state.pending:
        return None  # a pending message may have been completed or failed since
    if state.count + len(newer) != summary.message_count:
        return None  # a cached message was deleted
    cached = state.entries[len(state.entries) - len(overlap) :] if overlap else ()
    if [(e.id, e.seq) for e in cached] != [(m.id, m.seq) for m in overlap]:
        return None
    return _extend(state, newer, last_seq, summary)


def _entry(message: Message) -> _Entry:
    items = items_of_messages([message])
    text = json.dumps(items, separators=(",", ":"))[1:-1]
    newest = Newest(message.history_id, message_is_answer(message))
    return _Entry(message.id, message.seq, message.status == "pending", newest, text)


def _extend(state: _State, messages: list[Message], last_seq: int, summary: ConversationSummary) -> _State:
    """``state`` with ``messages`` appended, as of the conversation read with them."""
    added = tuple(_entry(m) for m in messages)
    pending = state.pending or any(entry.pending for entry in added)
    return _State(state.entries + added, pending, last_seq, summary.message_count, summary.updated_at)
