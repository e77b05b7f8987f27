"""The histories that runs of this process hold open, whichever session or thread records them.

A run that finds the conversation's newest history ``running`` closes it as left open by a dead
run, unless a run here holds it, or may be about to: a history just started is held only once
its start returns, so it is ``starting`` (``chatmemory.recording``) until then.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING
from uuid import UUID

from chatmemory.recording import starting, starting_in

if TYPE_CHECKING:
    from chatmemory_openai_agents._record import RunRecord

__all__ = ["held_in", "hold", "holder", "release", "starting", "taken_here"]

# Weak: a run whose record is gone (its session with it) holds nothing any more.
_HELD: weakref.WeakValueDictionary[UUID, RunRecord] = weakref.WeakValueDictionary()
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


def held_in(conversation_id: UUID) -> list[RunRecord]:
    """The runs here that record into histories of the conversation ``conversation_id``."""
    with _GUARD:
        runs = list(_HELD.values())
    return [r for r in runs if r.history is not None and r.history.conversation_id == conversation_id]


def taken_here(conversation_id: UUID | str, history_id: UUID) -> bool:
    """Whether a run here holds ``history_id`` or may have just started it. Ask after reading
    the history: a run that started it is counted as starting until it holds it, so the starts
    are asked first."""
    if starting_in(conversation_id):
        return True
    with _GUARD:
        return history_id in _HELD
