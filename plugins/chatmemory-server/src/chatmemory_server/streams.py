"""Change streams: ``Scope.watch`` over Server-Sent Events and over a WebSocket, on the same paths.

A stream starts at the current change cursor, announced first (SSE ``event: ready`` with
that ``id:``; WebSocket ``{"type": "ready", "cursor"}``), so a client never misses a change
made between connecting and the first event. Each change carries its cursor (the SSE
``id:``); reconnecting with it (``Last-Event-ID`` or ``?after=``) resumes right after it.
Access is checked before the stream starts (``401``/``404``/``422`` as for any route); an
error later (the conversation deleted or its access lost, the store closing) is sent as a
last ``error`` event before the stream ends. A server shutting down ends every stream cleanly
(``Streams.end``): the SSE body ends, a WebSocket closes with code 1012 (service restart), and
the client resumes from its last cursor wherever it reconnects.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope
from starlette.websockets import WebSocket, WebSocketDisconnect

from chatmemory import ChangeEvent, ChatMemoryError, InvalidInputError, NotFoundError, Scope
from chatmemory_server.bearer import (
    AuthenticationError,
    BearerVerifier,
    CredentialsRefused,
    Identity,
    identify_authorization,
)
from chatmemory_server.errors import auth_error_kind, error_body, error_response
from chatmemory_server.inputs import WatchQuery
from chatmemory_server.openapi import StreamDoc
from chatmemory_server.routing import Store, parse_query

__all__ = ["BEARER_SUBPROTOCOL", "STREAMS", "Pump", "Streams"]

STREAMS = [
    StreamDoc("/events", "Every change to the caller's conversations as it commits (a sidebar)", ChangeEvent),
    StreamDoc(
        "/conversations/{conversation_id}/events",
        "Every change to one conversation as it commits",
        ChangeEvent,
    ),
]

BEARER_SUBPROTOCOL = "bearer"
"""Offered first, with the token second, it carries the token of a browser's WebSocket."""

_END = object()
_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
# WebSocket close codes for an error after the stream started (4000-4999 are the application's).
_CLOSE_CODES: list[tuple[type[ChatMemoryError], int]] = [
    (NotFoundError, 4404),
    (InvalidInputError, 4422),
    (AuthenticationError, 4401),
]


class Streams:
    """Serves the change streams of one app."""

    def __init__(self, store: Store, verifier: BearerVerifier, *, keepalive: float) -> None:
        self._store = store
        self._verifier = verifier
        self._keepalive = keepalive
        self._open_pumps: set[Pump] = set()
        self._ended = False

    def end(self) -> None:
        """End every open stream cleanly, and those opening from now on once they start: the
        server is shutting down (an open stream would never end on its own)."""
        self._ended = True
        for pump in list(self._open_pumps):
            pump.end()

    def _track(self, pump: Pump) -> None:
        self._open_pumps.add(pump)
        pump.on_close = self._open_pumps.discard
        if self._ended:
            pump.end()

    async def _open(
        self, conn: HTTPConnection, authorization: str | None, last_event_id: str | None
    ) -> tuple[Pump, str | None]:
        """The caller's watch, started, and the cursor to announce when it starts fresh.

        Raises:
            AuthenticationError, ChatMemoryError: before anything is sent (a malformed cursor too).
        """
        identity = await identify_authorization(authorization, self._verifier)
        credentials = _Credentials(authorization, self._verifier, identity, self._keepalive)
        after = last_event_id or parse_query(WatchQuery, conn.query_params).after or None
        cid = conn.path_params.get("conversation_id")
        chat: Scope = (await self._store.get()).scoped(identity.principal)
        if after:
            try:
                await chat.change_cursor(cid)  # visible and live: the watch may wait for changes
                live = True
            except NotFoundError:
                # It may still owe a deleted conversation's last events, and then its first read
                # answers them (it never waits), or it refuses a conversation not visible.
                live = False
            pump = Pump(chat.watch(cid, after=after), credentials, chat, cid)
            await (pump.started() if live else pump.first())
            return pump, None
        current = await chat.change_cursor(cid)  # also checks the conversation is visible
        pump = Pump(chat.watch(cid, after=current), credentials, chat, cid)
        await pump.started()
        return pump, current

    async def sse(self, request: Request) -> Response:
        """``GET .../events``: the stream as ``text/event-stream``."""
        try:
            headers = request.headers
            pump, ready = await self._open(
                request, headers.get("authorization"), headers.get("last-event-id")
            )
        except ChatMemoryError as exc:
            return error_response(exc)
        if request.method == "HEAD":
            # The answer a GET would start with, and its end: a body never comes to end it.
            await pump.aclose()
            return Response(media_type="text/event-stream", headers=_STREAM_HEADERS)
        self._track(pump)
        return _EventStream(pump, _sse_frames(pump, ready, self._keepalive, pump.fresh_cursor))

    async def websocket(self, ws: WebSocket) -> None:
        """The stream as JSON frames over a WebSocket; refusals are plain HTTP answers to the upgrade.

        Browsers cannot set headers on a WebSocket, so the token may come as the second of the
        subprotocols ``["bearer", token]``; the server then accepts the ``bearer`` subprotocol.
        """
        authorization = ws.headers.get("authorization")
        offered = ws.scope.get("subprotocols") or []
        subprotocol = None
        if authorization is None and len(offered) == 2 and offered[0] == BEARER_SUBPROTOCOL:
            subprotocol, authorization = BEARER_SUBPROTOCOL, f"Bearer {offered[1]}"
        try:
            pump, ready = await self._open(ws, authorization, None)
        except ChatMemoryError as exc:
            await ws.send_denial_response(error_response(exc))
            return
        self._track(pump)
        try:
            await ws.accept(subprotocol)
            await ws.send_json({"type": "ready", "cursor": ready})
            relay = asyncio.create_task(_relay(ws, pump, self._keepalive))
            closed = asyncio.create_task(_until_closed(ws))
            try:
                await asyncio.wait({relay, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (relay, closed):
                    task.cancel()
                    # A client that leaves while a change is being sent is a normal end.
                    with suppress(asyncio.CancelledError, WebSocketDisconnect):
                        await task
        finally:
            await pump.aclose()


class _EventStream(StreamingResponse):
    """The SSE response; it closes the watch however the response ends, even before it starts."""

    def __init__(self, pump: Pump, frames: AsyncIterator[str]) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=_STREAM_HEADERS)
        self._pump = pump

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._pump.aclose()


class _Credentials:
    """A stream's token, checked again while the stream runs: its expiry before every event,
    and the whole token (a revoked one is refused) at least every ``every`` seconds."""

    def __init__(
        self, authorization: str | None, verifier: BearerVerifier, identity: Identity, every: float
    ) -> None:
        self._authorization = authorization
        self._verifier = verifier
        self._identity = identity
        self._every = every
        self._checked = time.monotonic()

    def wait(self, keepalive: float | None) -> float | None:
        """How long to wait for an event before the next check (``None``: no limit): at most
        until the token expires, and until the whole token is due to be verified again (an
        event handed out meanwhile does not put that off)."""
        due = max(self._every - (time.monotonic() - self._checked), 0.0)
        expires = self._identity.expires_at
        left = due if expires is None else min(due, max(expires - time.time(), 0.0))
        return left if keepalive is None else min(keepalive, left)

    async def check(self) -> None:
        """Raises CredentialsRefused once the token has expired, is refused, or stands for
        another principal than the one the stream started as (its entry was changed)."""
        if self._identity.expired:
            raise CredentialsRefused()
        if time.monotonic() - self._checked >= self._every:
            identity = await identify_authorization(self._authorization, self._verifier)
            if identity.principal != self._identity.principal:
                raise CredentialsRefused()
            self._identity = identity
            self._checked = time.monotonic()


class Pump:
    """Reads a watch in a task of its own, so that waiting for it can time out without
    cancelling the watch in the middle of a read; closed with ``aclose``. Every event is
    handed out only while the stream's credentials still hold."""

    def __init__(
        self,
        source: AsyncIterator[ChangeEvent],
        credentials: _Credentials,
        chat: Scope,
        conversation_id: str | None,
    ) -> None:
        self._source = source
        self._credentials = credentials
        self._chat = chat
        self._conversation_id = conversation_id
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        self._head: list[Any] = []
        self._task = asyncio.create_task(self._run())
        self.ended = False
        self.on_close: Callable[[Pump], None] | None = None

    async def _run(self) -> None:
        try:
            async for event in self._source:
                await self._queue.put(event)
        except Exception as exc:  # handed to the reader, which raises it
            await self._queue.put(exc)
            return
        await self._queue.put(_END)

    async def started(self) -> None:
        """Let the watch begin; an error it raises at once (a malformed cursor) is raised here.

        Raises:
            ChatMemoryError: the watch refused to start.
        """
        await asyncio.sleep(0)
        if not self._queue.empty():
            self._head.append(self._queue.get_nowait())
            await self._refuse_failed_head()

    async def first(self) -> None:
        """Wait for the watch's first item, for a watch that answers at once (a resume of a
        deleted conversation yields what it still owes, or refuses one not visible).

        Raises:
            ChatMemoryError: the watch refused to start.
        """
        self._head.append(await self._queue.get())
        await self._refuse_failed_head()

    async def _refuse_failed_head(self) -> None:
        head = self._head[0]
        if isinstance(head, Exception):
            await self.aclose()
            raise head

    async def next(self, within: float | None = None) -> ChangeEvent | None:
        """The next event; ``None`` when ``within`` seconds pass first (the credentials are
        checked then too, and before any event).

        Raises:
            StopAsyncIteration: the watch ended.
            ChatMemoryError: the watch failed, or the credentials no longer hold.
        """
        if self._head:
            item = self._head.pop()
        else:
            try:
                item = await asyncio.wait_for(self._queue.get(), self._credentials.wait(within))
            except TimeoutError:
                await self._credentials.check()
                return None
        await self._credentials.check()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        event: ChangeEvent = item
        return event

    async def fresh_cursor(self) -> str | None:
        """The watch's cursor of now (``None`` when there is none: the conversation is gone)."""
        try:
            return await self._chat.change_cursor(self._conversation_id)
        except ChatMemoryError:
            return None

    def end(self) -> None:
        """Stop reading: the next event is the end (events read ahead and not yet handed out
        are dropped; a resume from the last one handed out gets them)."""
        self.ended = True
        self._task.cancel()
        self._head.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)

    async def aclose(self) -> None:
        """Stop reading and close the watch."""
        if self.on_close is not None:
            self.on_close(self)
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()


async def _relay(ws: WebSocket, pump: Pump, keepalive: float) -> None:
    try:
        while True:
            event = await pump.next(keepalive)
            if event is not None:
                await ws.send_text(json.dumps({"type": "change", "event": event.model_dump(mode="json")}))
    except StopAsyncIteration:
        await ws.close(1012 if pump.ended else 1000)
    except ChatMemoryError as exc:
        code = next((c for kind, c in _CLOSE_CODES if isinstance(exc, kind)), 1011)
        await ws.send_text(json.dumps({"type": "error", **_error(exc)}))
        await ws.close(code)


async def _until_closed(ws: WebSocket) -> None:
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass  # the client has nothing to say on this socket; its messages are ignored


async def _sse_frames(
    pump: Pump, ready: str | None, keepalive: float, fresh_cursor: Callable[[], Awaitable[str | None]]
) -> AsyncIterator[str]:
    try:
        yield (f"id: {ready}\n" if ready else "") + "event: ready\ndata: {}\n\n"
        while True:
            event = await pump.next(keepalive)
            if event is None:
                yield ": keep-alive\n\n"
            else:
                yield f"id: {event.cursor}\ndata: {event.model_dump_json()}\n\n"
    except StopAsyncIteration:
        return
    except ChatMemoryError as exc:
        # A cursor too old (changes after it were purged): the error says reload, and its id, the
        # cursor of now, is what a browser's EventSource resumes from when it reconnects on its
        # own, instead of the refused cursor again and again.
        again = await fresh_cursor() if isinstance(exc, InvalidInputError) and exc.field == "after" else None
        yield (f"id: {again}\n" if again else "") + f"event: error\ndata: {json.dumps(_error(exc))}\n\n"


def _error(exc: ChatMemoryError) -> dict[str, Any]:
    if isinstance(exc, AuthenticationError):
        return error_body(auth_error_kind(exc), str(exc))
    if isinstance(exc, InvalidInputError):
        return error_body(type(exc).__name__, exc.reason, exc.field)
    return error_body(type(exc).__name__, str(exc))
