"""The OpenAPI 3.1 document, built from the endpoint declarations and their pydantic models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from chatmemory_server.routing import Endpoint

__all__ = ["PREFIX", "StreamDoc", "openapi_document"]

PREFIX = "/v1"
_REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"{(\w+)}")
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "examples": ["InvalidInputError", "ConversationNotFound"]},
                "message": {"type": "string"},
                "field": {"type": "string", "examples": ["messages.0.role"]},
            },
        }
    },
}
_ERRORS = {
    "401": "No bearer token, or a refused one",
    "404": "No visible object has this id",
    "409": "The object's state forbids the change",
    "413": "The body is too large",
    "422": "A field is missing, unknown, of the wrong type or out of range",
}


@dataclass(frozen=True, slots=True)
class StreamDoc:
    """A change stream's entry in the document (served as SSE, and as a WebSocket on the same path)."""

    path: str
    summary: str
    event: Any


def openapi_document(
    endpoints: Sequence[Endpoint], streams: Sequence[StreamDoc], *, version: str, server: str | None = None
) -> dict[str, Any]:
    """The document describing ``endpoints`` and ``streams`` under ``/v1``."""
    components: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        operation: dict[str, Any] = {
            "operationId": e.name,
            "summary": e.summary,
            "parameters": _path_parameters(e.path),
            "responses": _responses(e, components),
        }
        if e.query is not None:
            operation["parameters"] += _query_parameters(e.query)
        if e.body is not None:
            body = _schema(e.body, "validation", components)
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths.setdefault(PREFIX + e.path, {})[e.method.lower()] = operation
    for s in streams:
        paths.setdefault(PREFIX + s.path, {})["get"] = _stream_operation(s, components)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "chatmemory", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
    if server:
        document["servers"] = [{"url": server}]
    return document


def _schema(
    tp: Any, mode: Literal["validation", "serialization"], components: dict[str, Any]
) -> dict[str, Any]:
    schema = TypeAdapter(tp).json_schema(ref_template=_REF, mode=mode)
    components.update(schema.pop("$defs", {}))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", tp.__name__).strip("_")
        components.setdefault(name, schema)
        return {"$ref": _REF.format(model=name)}
    return schema


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
        for name in _PARAM.findall(path)
    ]


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]


def _responses(e: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": e.summary}
    if e.response is not None:
        ok["content"] = {"application/json": {"schema": _schema(e.response, "serialization", components)}}
    responses = {str(e.status): ok}
    wanted = ["401", "422"]
    if _PARAM.search(e.path):
        wanted.append("404")
    if e.method in {"POST", "PATCH"}:
        wanted += ["409", "413"]
    for code in wanted:
        responses[code] = {
            "description": _ERRORS[code],
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
        }
    return responses


def _stream_operation(s: StreamDoc, components: dict[str, Any]) -> dict[str, Any]:
    event = _schema(s.event, "serialization", components)
    return {
        "operationId": "watch_" + ("conversation" if _PARAM.search(s.path) else "all"),
        "summary": s.summary,
        "description": (
            "Server-Sent Events: first an `event: ready` whose `id:` is the current cursor (when "
            "not resuming), then one unnamed event per change, its `id:` the change's cursor and its "
            "`data:` the change as JSON; `: keep-alive` comments while idle; an `event: error` "
            "with an error body before the stream ends. Resume with `Last-Event-ID` or `?after=`. "
            "The same path accepts a WebSocket upgrade: JSON frames "
            '`{"type": "ready", "cursor"}`, `{"type": "change", "event"}`, `{"type": "error", "error"}`; '
            "resume with `?after=`."
        ),
        "parameters": [
            *_path_parameters(s.path),
            {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {
                "description": "The change stream",
                "content": {"text/event-stream": {"schema": event}},
            },
            **{
                code: {
                    "description": _ERRORS[code],
                    "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
                }
                for code in (["401", "422", "404"] if _PARAM.search(s.path) else ["401", "422"])
            },
        },
    }
