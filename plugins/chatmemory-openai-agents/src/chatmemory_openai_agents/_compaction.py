"""Compaction support: a bounded snapshot of the newest items and an atomic replacement of its end."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from agents.items import TResponseInputItem
from agents.memory.session import _CompactionSnapshot

from chatmemory import ConflictError, HistoryNotFound, Message
from chatmemory.recording import settled
from chatmemory.scope import Scope
from chatmemory_openai_agents._items import items_of_messages
from chatmemory_openai_agents._models import default_model_name
from chatmemory_openai_agents._record import Recorder

__all__ = ["Tail", "put_back", "read_tail", "replace_tail"]

_PAGE = 1000  # the store's default cap on one page of a listing, fewer if it takes fewer
_BATCH = 1000  # messages per append call (the store's default cap), fewer if it takes fewer


@dataclass(frozen=True)
class Tail:
    """The newest messages of a conversation (oldest first) and the items they stand for."""

    messages: list[Message]
    counts: list[int]
    items: list[TResponseInputItem]
    complete: bool


async def read_tail(chat: Scope, conversation_id: Any, count: int) -> Tail:
    """The newest live messages that hold at least ``count`` items (fewer when there are not)."""
    newest: list[Message] = []
    found = 0
    cursor: str | None = None
    more = True
    while more and found < count:
        size = chat.limits.page_size(min(_PAGE, count - found))
        page = await chat.list_messages(
            conversation_id=conversation_id, newest_first=True, limit=size, cursor=cursor
        )
        for index, message in enumerate(page.items):
            newest.append(message)
            found += len(_items(message))
            if found >= count:
                more = index + 1 < len(page.items) or page.has_more
                break
        else:
            more, cursor = page.has_more, page.next_cursor
    messages = newest[::-1]
    per_message = [_items(m) for m in messages]
    items = [item for group in per_message for item in group]
    return Tail(messages, [len(group) for group in per_message], items, complete=not more)


def _items(message: Message) -> list[TResponseInputItem]:
    return items_of_messages([message])


async def replace_tail(
    recorder: Recorder,
    tail: Tail,
    start: int,
    output: Sequence[TResponseInputItem],
    *,
    reason: str = "compaction",
    model: str | None = None,
) -> bool:
    """Replace the tail's items from ``start`` on with ``output``, atomically; ``False`` if it changed.

    The replaced messages are soft-deleted; their histories keep their model, usage and
    metadata. The output goes into a history of its own driven by ``model`` (by default the
    session's, else the replaced messages'), whose metadata names the ``reason``.
    """
    first = _message_index(tail.counts, start)
    if first is None or first == len(tail.messages):
        return False
    replaced = tail.messages[first:]
    chat = recorder.chat
    models = [m.model for m in replaced if m.model]
    history = await chat.start_history(
        recorder.conversation_id,
        model=model or recorder.model or (models[-1] if models else default_model_name()),
        metadata=_metadata(recorder, reason, len(replaced)),
    )
    messages = [recorder.message_of(item) for item in output]
    # More than one append takes (a compaction keeps every user message of a long conversation)
    # replaces the tail with the first ones at once, the rest appended after them: as the SDK
    # replaces the items of a session that cannot do it at once, by clearing it and adding them.
    size = chat.limits.batch_size(_BATCH)
    head, rest = messages[:size], messages[size:]
    try:
        await chat.replace_messages(
            recorder.conversation_id,
            replacing=[m.id for m in replaced],
            history_id=history.id,
            messages=head,
        )
    except ConflictError:
        await chat.delete_history(history.id)
        return False
    for start in range(0, len(rest), size):
        try:
            await chat.append_messages(history.id, rest[start : start + size])
        except ConflictError:
            # A run starting meanwhile closed it, as the newest running history: the rest in
            # a history of its own.
            await put_back(recorder, output[size + start :], model=history.model)
            return True
        except HistoryNotFound:
            return True  # the session was cleared meanwhile
    # A run starting meanwhile may have closed it, as the newest running history: the
    # replacement is done all the same.
    with contextlib.suppress(ConflictError):
        await chat.finish_history(history.id)
    return True


async def put_back(recorder: Recorder, items: Sequence[TResponseInputItem], *, model: str | None) -> UUID:
    """Record ``items``, the rest of a message a pop takes one item of, as a ``completed``
    history of their own driven by ``model``; returns its id."""
    recorded = await recorder.chat.record_run(
        recorder.conversation_id,
        model=model or recorder.model or default_model_name(),
        messages=[recorder.message_of(item) for item in items],
        metadata=_metadata(recorder, "pop", 1),
    )
    return recorded.history.id


def _metadata(recorder: Recorder, reason: str, replaced: int) -> dict[str, Any]:
    return {**recorder.history_metadata(), reason: {"replaced": replaced}}


def _message_index(counts: list[int], start: int) -> int | None:
    """The index of the message whose first item is item ``start``, or ``None`` mid-message."""
    seen = 0
    for index, count in enumerate(counts):
        if seen == start:
            return index
        seen += count
        if seen > start:
            return None
    return len(counts) if seen == start else None


def snapshot(recorder: Recorder, tail: Tail) -> _CompactionSnapshot:
    """The SDK's compaction snapshot of ``tail``."""

    async def replace_suffix(start: int, output: list[TResponseInputItem]) -> bool:
        return await settled(replace_tail(recorder, tail, start, output))

    return _CompactionSnapshot(list(tail.items), tail.complete, replace_suffix)
