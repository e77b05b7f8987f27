"""For adapters that record runs as they go: telling a run whose recorder is gone from a live one.

An adapter records a run into a ``running`` history message by message, so a process killed
mid-run leaves its history ``running``. Stamping the history with :func:`recorder_metadata`
and registering it in :data:`LIVE_HISTORIES` while the run lasts lets a later run, on the same
host, close it: :func:`abandoned` is true once the recording process is gone. Histories
recorded on other hosts are never judged (their processes cannot be seen from here).

A history a run of this process has just started is registered only once its start returns:
until then the run counts as :func:`starting` in its conversation, and a run that has read the
history asks :func:`starting_in` before taking it for abandoned.

A run's writes are awaited with :func:`settled`, so a cancelled run never leaves them half
done, and a history closed by an error says what stopped it (:func:`run_error`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from uuid import UUID

from chatmemory._db import settle
from chatmemory.models import History

__all__ = [
    "ABANDONED",
    "LIVE_HISTORIES",
    "abandoned",
    "recorder_metadata",
    "run_error",
    "settled",
    "starting",
    "starting_in",
]

T = TypeVar("T")

ABANDONED = "the process recording this run stopped before the run ended"
"""The error an adapter records when it closes an abandoned history."""

LIVE_HISTORIES: set[UUID] = set()
"""Histories this process is recording right now."""

_HOST = socket.gethostname()
_STARTS: collections.Counter[str] = collections.Counter()  # emptied as starts end
_STARTS_GUARD = threading.Lock()


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


def run_error(error: BaseException, *, limit: int = 10_000) -> str:
    """The error recorded for a run that ``error`` stopped: its type and message, at most
    ``limit`` characters. A cancellation carrying no message of its own (none, or an object
    that is not text) says what it stopped."""
    detail = str(error)
    message = error.args[0] if error.args else None
    if isinstance(error, asyncio.CancelledError) and not (isinstance(message, str) and message):
        # No message, or an object that is none (LangGraph cancels its tasks with a sentinel).
        detail = "the task running the agent was cancelled"
    return f"{type(error).__name__}: {detail}"[:limit]


async def settled(work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` (a run's writes) to its end even when the caller is cancelled meanwhile,
    however often; the cancellation then goes on, whatever the work's outcome, so a cancelled
    caller never leaves writes half done and is never told of their failure instead.

    Never waits longer than the work: a store closed meanwhile fails it at its next call.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await settle(task)
        raise


@contextlib.contextmanager
def starting(conversation_id: UUID | str) -> Iterator[None]:
    """Around a run's start of a history in the conversation, until the run has registered it
    (in :data:`LIVE_HISTORIES` or the adapter's own record of the runs it holds)."""
    key = _conversation_key(conversation_id)
    with _STARTS_GUARD:
        _STARTS[key] += 1
    try:
        yield
    finally:
        with _STARTS_GUARD:
            _STARTS[key] -= 1
            if not _STARTS[key]:
                del _STARTS[key]


def starting_in(conversation_id: UUID | str) -> bool:
    """Whether a run of this process is starting a history in the conversation. Asked after
    reading a history, a ``False`` means its run, if of this process, has registered it."""
    with _STARTS_GUARD:
        return bool(_STARTS[_conversation_key(conversation_id)])


def _conversation_key(conversation_id: UUID | str) -> str:
    try:
        return str(UUID(str(conversation_id)))
    except ValueError:
        return str(conversation_id)
