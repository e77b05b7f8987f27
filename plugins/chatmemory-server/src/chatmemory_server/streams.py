"""Change streams: ``Scope.watch`` over Server-Sent Events and over a WebSocket, on the same paths.

A stream starts at the current change cursor, announced first (SSE ``event: ready`` with
that ``id:``; WebSocket ``{"type": "ready", "cursor"}``), so a client never misses a change
made between connecting and the first event. Each change carries its cursor (the SSE
``id:``); reconnecting with it (``Last-Event-ID`` or ``?after=``) resumes right after it.
Access is checked before the stream starts (``401``/``404``/``422`` as for any route); an
error later (the conversation deleted or its access lost, the store closing) is sent as a
last ``error`` event before the stream ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket

from chatmemory import ChatMemoryError, InvalidInputError, NotFoundError, Scope

try:  # TEMPORARY until watch lands
    from chatmemory import ChangeEvent  # type: ignore[attr-defined]
except ImportError:
    from pydantic import BaseModel as ChangeEvent
from chatmemory_server.bearer import AuthenticationError, BearerVerifier
from chatmemory_server.errors import error_body, error_response, unauthorized
from chatmemory_server.inputs import WatchQuery
from chatmemory_server.openapi import StreamDoc
from chatmemory_server.routing import Store, authenticate, parse_query

__all__ = ["STREAMS", "Streams", "ticking"]

STREAMS = [
    StreamDoc("/events", "Every change to the caller's conversations as it commits (a sidebar)", ChangeEvent),
    StreamDoc(
        "/conversations/{conversation_id}/events",
        "Every change to one conversation as it commits",
        ChangeEvent,
    ),
]

_END = object()
# WebSocket close codes for an error after the stream started (4000-4999 are the application's).
_CLOSE_CODES: list[tuple[type[ChatMemoryError], int]] = [(NotFoundError, 4404), (InvalidInputError, 4422)]


class Streams:
    """Serves the change streams of one app."""

    def __init__(self, store: Store, verifier: BearerVerifier, *, keepalive: float) -> None:
        self._store = store
        self._verifier = verifier
        self._keepalive = keepalive

    async def _open(
        self, conn: HTTPConnection, last_event_id: str | None
    ) -> tuple[AsyncIterator[ChangeEvent], str | None]:
        """The caller's watch and, when it starts fresh, the cursor to announce.

        Raises:
            AuthenticationError, ChatMemoryError: before anything is sent.
        """
        principal = await authenticate(conn.headers, self._verifier)
        after = last_event_id or parse_query(WatchQuery, conn.query_params).after or None
        cid = conn.path_params.get("conversation_id")
        chat: Scope = (await self._store.get()).scoped(principal)
        current = await chat.change_cursor(cid)  # also checks the conversation is visible
        return chat.watch(cid, after=after or current), None if after else current

    async def sse(self, request: Request) -> Response:
        """``GET .../events``: the stream as ``text/event-stream``."""
        try:
            events, ready = await self._open(request, request.headers.get("last-event-id"))
        except ChatMemoryError as exc:
            return error_response(exc)
        return StreamingResponse(
            _sse_frames(events, ready, self._keepalive),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def websocket(self, ws: WebSocket) -> None:
        """The stream as JSON frames over a WebSocket; refusals are plain HTTP answers to the upgrade."""
        try:
            events, ready = await self._open(ws, None)
        except AuthenticationError as exc:
            await ws.send_denial_response(unauthorized(exc))
            return
        except ChatMemoryError as exc:
            await ws.send_denial_response(error_response(exc))
            return
        await ws.accept()
        await ws.send_json({"type": "ready", "cursor": ready})
        relay = asyncio.create_task(_relay(ws, events))
        closed = asyncio.create_task(_until_closed(ws))
        try:
            await asyncio.wait({relay, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, closed):
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await _aclose(events)


async def _relay(ws: WebSocket, events: AsyncIterator[ChangeEvent]) -> None:
    try:
        async for event in events:
            await ws.send_text(json.dumps({"type": "change", "event": event.model_dump(mode="json")}))
    except ChatMemoryError as exc:
        code = next((c for kind, c in _CLOSE_CODES if isinstance(exc, kind)), 1011)
        await ws.send_text(json.dumps({"type": "error", **_error(exc)}))
        await ws.close(code)


async def _until_closed(ws: WebSocket) -> None:
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass  # the client has nothing to say on this socket; its messages are ignored


async def _sse_frames(
    events: AsyncIterator[ChangeEvent], ready: str | None, keepalive: float
) -> AsyncIterator[str]:
    yield (f"id: {ready}\n" if ready else "") + "event: ready\ndata: {}\n\n"
    try:
        async for event in ticking(events, keepalive):
            if event is None:
                yield ": keep-alive\n\n"
            else:
                yield f"id: {event.cursor}\ndata: {event.model_dump_json()}\n\n"
    except ChatMemoryError as exc:
        yield f"event: error\ndata: {json.dumps(_error(exc))}\n\n"


def _error(exc: ChatMemoryError) -> dict[str, Any]:
    field = exc.field if isinstance(exc, InvalidInputError) else None
    return error_body(
        type(exc).__name__, exc.reason if isinstance(exc, InvalidInputError) else str(exc), field
    )


async def ticking(source: AsyncIterator[ChangeEvent], every: float) -> AsyncIterator[ChangeEvent | None]:
    """``source``'s events, with ``None`` whenever ``every`` seconds pass without one.

    The source is read by one task of its own, so it is never cancelled in the middle of a
    read by a tick; it is closed when the caller stops.

    Raises:
        ChatMemoryError: whatever ``source`` raises.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        try:
            async for event in source:
                await queue.put(event)
        except Exception as exc:  # handed to the reader, which raises it
            await queue.put(exc)
            return
        await queue.put(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), every)
            except TimeoutError:
                yield None
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await _aclose(source)


async def _aclose(source: AsyncIterator[Any]) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()
