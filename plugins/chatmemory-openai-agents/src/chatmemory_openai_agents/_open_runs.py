"""The histories that runs of this process hold open, whichever session or thread records them.

A run that finds the conversation's newest history ``running`` closes it as left open by a dead
run, unless a run here holds it, or may be about to: a history just started is held only once
its start returns, so each conversation counts the starts under way until then.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from chatmemory_openai_agents._record import RunRecord

__all__ = ["hold", "holder", "release", "starting", "taken_here"]

# Weak: a run whose record is gone (its session with it) holds nothing any more.
_HELD: weakref.WeakValueDictionary[UUID, RunRecord] = weakref.WeakValueDictionary()
_STARTING: collections.Counter[str] = collections.Counter()  # emptied as starts end
_GUARD = threading.Lock()


def hold(history_id: UUID, run: RunRecord) -> None:
    """``run`` records into the history ``history_id`` from now on."""
    with _GUARD:
        _HELD[history_id] = run


def release(history_id: UUID) -> None:
    """No run here records into ``history_id`` any more."""
    with _GUARD:
        _HELD.pop(history_id, None)


def holder(history_id: UUID) -> RunRecord | None:
    """The run here that records into ``history_id``, if any."""
    with _GUARD:
        return _HELD.get(history_id)


@contextlib.contextmanager
def starting(conversation_id: UUID | str) -> Iterator[None]:
    """A run here is starting a history in the conversation (and holds it before this ends)."""
    key = _key(conversation_id)
    with _GUARD:
        _STARTING[key] += 1
    try:
        yield
    finally:
        with _GUARD:
            _STARTING[key] -= 1
            if not _STARTING[key]:
                del _STARTING[key]


def taken_here(conversation_id: UUID | str, history_id: UUID) -> bool:
    """Whether a run here holds ``history_id`` or may have just started it. Ask after reading
    the history: a run that started it is counted as starting until it holds it."""
    with _GUARD:
        return bool(_STARTING[_key(conversation_id)]) or history_id in _HELD


def _key(conversation_id: UUID | str) -> str:
    try:
        return str(UUID(str(conversation_id)))
    except ValueError:
        return str(conversation_id)
