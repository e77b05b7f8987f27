"""Store writes that a cancelled caller still sees through to their end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["settled"]

T = TypeVar("T")


async def settled(work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` to its end even when the caller is cancelled meanwhile; the cancellation
    then goes on. As with the SDK's own stores, a session call cancelled midway (a streamed run
    cancelled while it saves its items) has done all its writes, never half of them."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller's cancellation is what goes on
        raise
