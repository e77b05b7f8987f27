"""Every error the API answers with, and the one place core errors become HTTP statuses.

An error body is always ``{"error": {"type", "message", "field"?}}``: ``type`` is the core
exception's class name (``InvalidInputError``, ``ConversationNotFound``, ``ConflictError``, ...)
or one of the API's own (``MalformedRequest``, ``AuthenticationRequired``,
``InvalidToken``, ``RequestTooLarge``, ``RouteNotFound``, ``MethodNotAllowed``);
``field`` is the dotted path of the offending input (``messages.0.role``) when one is known.

| status | when |
|---|---|
| 400 | the body is not JSON |
| 401 | no bearer token, or a refused one (with ``WWW-Authenticate``) |
| 404 | no visible object has the id (someone else's ids answer exactly the same) |
| 409 | the object's state forbids the change (a finished history, a settled message) |
| 413 | the body is larger than the server accepts |
| 422 | a field is missing, unknown, of the wrong type or out of range |
| 503 | the database failed or its schema is out of date; nothing was changed |
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from chatmemory import (
    ChatMemoryError,
    ConflictError,
    CorruptDataError,
    InvalidInputError,
    NotFoundError,
    SchemaOutOfDateError,
    StorageError,
)
from chatmemory_server.bearer import AuthenticationError, CredentialsRefused

__all__ = ["ApiError", "error_body", "error_response", "invalid_input", "unauthorized"]

_STATUS: list[tuple[type[ChatMemoryError], int]] = [
    (InvalidInputError, 422),
    (NotFoundError, 404),
    (ConflictError, 409),
    (CorruptDataError, 500),  # before StorageError: a stored row that reads the same on every retry
    (StorageError, 503),
    (SchemaOutOfDateError, 503),
]


class ApiError(Exception):
    """An error of the HTTP layer itself: a malformed body, an unknown route, a body too large."""

    def __init__(self, status: int, kind: str, message: str, *, field: str | None = None) -> None:
        self.status = status
        self.kind = kind
        self.message = message
        self.field = field
        super().__init__(message)


def error_body(kind: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON body of an error answer."""
    error: dict[str, Any] = {"type": kind, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


def error_response(exc: Exception) -> Response:
    """The answer to an error raised while serving a request.

    Raises:
        Exception: ``exc`` itself when it is not an error the API knows; the server logs it
            and answers ``500``.
    """
    if isinstance(exc, AuthenticationError):
        return unauthorized(exc)
    if isinstance(exc, ApiError):
        return JSONResponse(error_body(exc.kind, exc.message, exc.field), status_code=exc.status)
    if isinstance(exc, ValidationError):
        exc = invalid_input(exc)
    if isinstance(exc, InvalidInputError):
        return JSONResponse(error_body("InvalidInputError", exc.reason, exc.field), status_code=422)
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=status)
    raise exc


def unauthorized(exc: AuthenticationError) -> Response:
    """``401`` with an RFC 6750 challenge: ``invalid_token`` when a token was presented and refused."""
    refused = isinstance(exc, CredentialsRefused)
    challenge = 'Bearer realm="chatmemory"'
    if refused:
        challenge += f', error="invalid_token", error_description="{exc}"'
    return JSONResponse(
        error_body(auth_error_kind(exc), str(exc)), status_code=401, headers={"WWW-Authenticate": challenge}
    )


def auth_error_kind(exc: AuthenticationError) -> str:
    """The error type of a refused request (or of a stream whose token stopped holding)."""
    return "InvalidToken" if isinstance(exc, CredentialsRefused) else "AuthenticationRequired"


def invalid_input(exc: ValidationError, prefix: str | None = None) -> InvalidInputError:
    """The deepest error of a pydantic validation as an ``InvalidInputError`` naming its field.

    The deepest error is the most precise one: for a value that may be text or a list of
    parts, a malformed part is reported, not that the list is not text. A core model that
    rejects a value itself (``NewMessage``) carries its own field, which is appended to the
    location pydantic reports (``messages.0`` + ``role``).
    """
    first = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
    loc = _field_path(first["loc"])
    reason = str(first["msg"])
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidInputError):
        loc += [cause.field] if cause.field else []
        reason = cause.reason
    elif first["type"] == "extra_forbidden":
        reason = "unknown field"
    path = ".".join([*([prefix] if prefix else []), *loc]) or None
    return InvalidInputError(path, reason)


def _field_path(loc: tuple[int | str, ...]) -> list[str]:
    """A pydantic location without the union members it names.

    pydantic names the member it tried (``str``, ``list[tagged-union[...]]``) and, in a
    tagged union, the tag (a part's ``type``) right after the item's index; a client knows
    its fields, not our type names.
    """
    path: list[str] = []
    tag_next = False
    for part in loc:
        if isinstance(part, str) and (part in {"str", "int", "bool", "float"} or "[" in part):
            tag_next = tag_next or "tagged-union[" in part
            continue
        if tag_next and isinstance(part, str) and path and path[-1].isdigit():
            tag_next = False
            continue
        path.append(str(part))
    return path
