"""Bounds on what one slow or idle connection can hold: header and body deadlines.

uvicorn has no deadline for a request's headers, nor for its body: a client sending one
byte a second keeps a connection (and, with a cap, a slot) for as long as it likes. The
header deadline is enforced in the HTTP protocol and the body deadline in the app; both
servers (``chatmemory-server`` and ``chatmemory-mcp http``) cap connections with uvicorn's
``limit_concurrency`` (``503`` beyond it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import h11
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["BodyDeadline", "header_deadline_protocol"]


class BodyDeadline:
    """Reads a request's whole body within ``seconds`` of the app being called, or answers ``408``.

    The body is read before ``app`` runs and replayed to it; bodies above ``max_bytes`` get
    ``413`` without being read further. A request without a body (``GET``) passes at once.
    ``answer(status, reason)`` builds those two refusals (plain text by default).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        seconds: float,
        max_bytes: int,
        answer: Callable[[int, str], Response] | None = None,
    ) -> None:
        self.app = app
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.answer = answer or _plain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body under the deadline, then run the app on it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.seconds) as deadline:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    await self.app(scope, _replay([message], receive), send)
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    await _close_with(self.answer(413, "Request body too large"), scope, send)
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            await _close_with(self.answer(408, "Request body not received in time"), scope, send)
            return
        body: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)


def _plain(status: int, reason: str) -> Response:
    return Response(reason, status_code=status)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _close_with(response: Response, scope: Scope, send: Send) -> None:
    # The rest of the body is still on the wire: the connection cannot be reused.
    response.headers["Connection"] = "close"

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, nothing, send)


def header_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete in ``seconds``.

    The clock starts when the connection opens and again after each response, so a kept-alive
    connection cannot trickle its next request either.
    """

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol
