"""Telling a history whose recording process is gone from one still being recorded."""

from __future__ import annotations

import os
import socket
from uuid import UUID

from chatmemory import History

__all__ = ["ABANDONED", "LIVE_HISTORIES", "abandoned", "recorder_metadata"]

ABANDONED = "the process recording this run stopped before the run ended"

LIVE_HISTORIES: set[UUID] = set()
"""Histories this process is recording right now."""

_HOST = socket.gethostname()


def recorder_metadata() -> dict[str, str | int]:
    """Where the recording process runs, so a later run can tell it stopped mid-run."""
    return {"host": _HOST, "pid": os.getpid()}


def abandoned(history: History) -> bool:
    """Whether a running LangChain history was left behind by a process on this host that is
    gone (or by this process, outside any run it is recording)."""
    meta = history.metadata or {}
    if history.status != "running" or meta.get("framework") != "langchain" or meta.get("host") != _HOST:
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
    except PermissionError:
        return False
    return False
