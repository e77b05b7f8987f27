"""``create_app``: the ASGI application serving the scoped API under ``/v1``."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from chatmemory import ChatMemory, __version__
from chatmemory_server.bearer import BearerVerifier
from chatmemory_server.errors import error_body
from chatmemory_server.limits import BodyDeadline
from chatmemory_server.openapi import PREFIX, openapi_document
from chatmemory_server.routes import api
from chatmemory_server.routing import Store, serve
from chatmemory_server.streams import STREAMS, Streams

__all__ = ["create_app"]


def create_app(
    memory: ChatMemory | str | None = None,
    *,
    verifier: BearerVerifier,
    max_body_bytes: int = 4 * 1024 * 1024,
    body_timeout: float = 30.0,
    keepalive: float = 15.0,
) -> Starlette:
    """The API as a Starlette app, to run with any ASGI server or mount in Starlette or FastAPI.

    Args:
        memory: the store to serve. A ``ChatMemory`` stays the caller's to close; a URL (or
            ``None``: ``$CHATMEMORY_URL``, else the user data directory) is opened when the app
            starts (or on the first request, when its lifespan does not run) and closed when it
            shuts down.
        verifier: checks each request's bearer token (``TokenFileVerifier``, ``JWTVerifier``,
            ``AnyOfVerifier`` of both, or your own ``BearerVerifier``); its principal scopes
            every call of the request.
        max_body_bytes: larger request bodies get ``413`` unread.
        body_timeout: seconds a request has to send its body (``408`` after).
        keepalive: seconds between keep-alive comments on an idle event stream.

    A server shutting down ends the open event streams cleanly by calling
    ``app.state.end_streams()`` first (``chatmemory-server`` does): each SSE body ends and each
    WebSocket closes with code 1012, and clients resume from their last cursor. Otherwise the
    server waits for them to end, then cuts them off.
    """
    store = Store(memory)
    streams = Streams(store, verifier, keepalive=keepalive)
    routes: list[BaseRoute] = [
        Route(PREFIX + e.path, serve(e, store, verifier), methods=[e.method]) for e in api.endpoints
    ]
    for doc in STREAMS:
        routes.append(Route(PREFIX + doc.path, streams.sse, methods=["GET"]))
        routes.append(WebSocketRoute(PREFIX + doc.path, streams.websocket))

    async def openapi(request: Request) -> Response:
        return Response(_openapi_body(request.scope.get("root_path") or None), media_type="application/json")

    routes.append(Route("/openapi.json", openapi, methods=["GET"]))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.get()  # a wrong URL or an old schema stops the server at start, not at a request
        try:
            yield
        finally:
            await store.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
        middleware=[
            Middleware(BodyDeadline, seconds=body_timeout, max_bytes=max_body_bytes, answer=_refused_body)
        ],
    )
    # For the server running the app, as it shuts down (see ``chatmemory_server.cli``): open
    # streams never end on their own, and the server would wait for them, then cut them off.
    app.state.end_streams = streams.end
    return app


@functools.lru_cache(maxsize=8)
def _openapi_body(server: str | None) -> bytes:
    """The OpenAPI document, built once for each prefix the app is served under: building it
    takes about half a second, during which the event loop serves nothing else."""
    document = openapi_document(api.endpoints, STREAMS, version=__version__, server=server)
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "RouteNotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    return JSONResponse(error_body(kind, exc.detail), status_code=exc.status_code, headers=exc.headers)


def _refused_body(status: int, reason: str) -> Response:
    kind = "RequestTooLarge" if status == 413 else "RequestTimeout"
    return JSONResponse(error_body(kind, reason, "body"), status_code=status)
