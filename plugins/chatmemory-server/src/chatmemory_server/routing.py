"""Endpoints declared once, served and documented from the same declaration.

Each ``Endpoint`` names its method, path, body and query models, result model and status;
``serve`` turns it into a Starlette endpoint that authenticates the caller, validates the
input, runs the handler in the caller's scope and renders the result, and
``chatmemory_server.openapi`` describes it. A route cannot exist without its document entry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from chatmemory import ChatMemory, ChatMemoryError, InvalidInputError, Principal, Scope, StorageError
from chatmemory_server.bearer import BearerVerifier, identify_authorization
from chatmemory_server.errors import ApiError, error_response, invalid_input
from chatmemory_server.inputs import NoQuery

__all__ = ["Api", "Call", "Endpoint", "Store", "authenticate", "parse_query", "serve"]


@dataclass(frozen=True, slots=True)
class Call:
    """One validated request: the caller's scope, the path parameters, the body and the query."""

    chat: Scope
    params: Mapping[str, str]
    body: Any = None
    query: Any = None


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One operation of the API (``path`` is relative to ``/v1``)."""

    method: str
    path: str
    handler: Handler
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    status: int = 200

    @property
    def name(self) -> str:
        """The operation id: the handler's name."""
        return self.handler.__name__

    @property
    def summary(self) -> str:
        """The first line of the handler's docstring."""
        return (self.handler.__doc__ or "").strip().splitlines()[0]


@dataclass
class Api:
    """Collects endpoints with a decorator per method."""

    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
    ) -> Callable[[Handler], Handler]:
        """Declare the decorated handler as ``method path``."""

        def add(handler: Handler) -> Handler:
            self.endpoints.append(Endpoint(method, path, handler, body, query, response, status))
            return handler

        return add


class Store:
    """The ``ChatMemory`` the app serves: given (the caller owns it) or opened from a URL on first use."""

    def __init__(self, memory: ChatMemory | str | None) -> None:
        self._given = memory if isinstance(memory, ChatMemory) else None
        self._url = None if isinstance(memory, ChatMemory) else memory
        self._opened: ChatMemory | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> ChatMemory:
        """The store, opening it on first use.

        Raises:
            StorageError, SchemaOutOfDateError: the database cannot be opened or is out of date.
        """
        if self._given is not None:
            return self._given
        async with self._lock:
            if self._opened is None:
                try:
                    self._opened = await ChatMemory.open(self._url)
                except InvalidInputError as exc:
                    # The server's own configuration is wrong, not the request.
                    raise StorageError(f"the database cannot be opened: {exc}") from exc
            return self._opened

    async def close(self) -> None:
        """Close the store if this app opened it."""
        if self._opened is not None:
            opened, self._opened = self._opened, None
            await opened.close()


async def authenticate(authorization: str | None, verifier: BearerVerifier) -> Principal:
    """The principal of a request's ``Authorization`` header.

    Raises:
        MissingCredentials, CredentialsRefused: no bearer token, or a refused one.
    """
    return (await identify_authorization(authorization, verifier)).principal


def parse_query(model: type[BaseModel], query: Mapping[str, str]) -> Any:
    """The query string validated by ``model``.

    Raises:
        InvalidInputError: a parameter is unknown or malformed.
    """
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        raise invalid_input(exc) from None


async def _parse_body(model: type[BaseModel], request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raw = b"{}"
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "MalformedRequest", f"the body is not JSON: {exc}", field="body") from None
    except RecursionError:  # valid JSON, nested deeper than the parser goes
        raise ApiError(422, "InvalidInputError", "is nested too deeply", field="body") from None
    if not isinstance(document, dict):
        raise ApiError(422, "InvalidInputError", "must be a JSON object", field="body")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise invalid_input(exc) from None


def serve(
    endpoint: Endpoint, store: Store, verifier: BearerVerifier
) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint running ``endpoint``."""

    async def run(request: Request) -> Response:
        try:
            principal = await authenticate(request.headers.get("authorization"), verifier)
            query = parse_query(endpoint.query or NoQuery, request.query_params)
            body = await _parse_body(endpoint.body, request) if endpoint.body else None
            chat = (await store.get()).scoped(principal)
            result = await endpoint.handler(Call(chat, request.path_params, body, query))
        except (ChatMemoryError, ApiError) as exc:
            return error_response(exc)
        return render(result, endpoint.status)

    run.__name__ = endpoint.name
    return run


def render(result: Any, status: int) -> Response:
    """A handler's result as a JSON response (``None``: an empty ``204``)."""
    if result is None:
        return Response(status_code=204)
    if isinstance(result, BaseModel):
        body = result.model_dump_json()
    else:
        body = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    return Response(body, status_code=status, media_type="application/json")
