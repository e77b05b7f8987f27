"""For adapters that record runs as they go: telling a run whose recorder is gone from a live one.

An adapter records a run into a ``running`` history message by message, so a process killed
mid-run leaves its history ``running``. Stamping the history with :func:`recorder_metadata`
and registering it in :data:`LIVE_HISTORIES` while the run lasts lets a later run, on the same
host, close it: :func:`abandoned` is true once the recording process is gone. Histories
recorded on other hosts are never judged (their processes cannot be seen from here).
"""

from __future__ import annotations

import os
import socket
from uuid import UUID

from chatmemory.models import History

__all__ = ["ABANDONED", "LIVE_HISTORIES", "abandoned", "recorder_metadata"]

ABANDONED = "the process recording this run stopped before the run ended"
"""The error an adapter records when it closes an abandoned history."""

LIVE_HISTORIES: set[UUID] = set()
"""Histories this process is recording right now."""

_HOST = socket.gethostname()


def recorder_metadata() -> dict[str, str | int]:
    """History metadata naming where the recording process runs (``host`` and ``pid``)."""
    return {"host": _HOST, "pid": os.getpid()}


def abandoned(history: History, *, framework: str) -> bool:
    """Whether ``history`` is a running history of ``framework`` (its ``metadata["framework"]``)
    left behind by a process on this host that is gone, or by this process outside any run it
    is recording."""
    meta = history.metadata or {}
    if history.status != "running" or meta.get("framework") != framework or meta.get("host") != _HOST:
        return False
    pid = meta.get("pid")
    if not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return history.id not in LIVE_HISTORIES
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # Alive, under another user.
        return False
    return False
