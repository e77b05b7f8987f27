"""The OpenAPI document matches the routes both ways, and the app works mounted under a prefix."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from chatmemory_server import TokenFileVerifier, create_app
from chatmemory_server import app as server_app
from chatmemory_server.openapi import openapi_document
from starlette.applications import Starlette
from starlette.routing import Mount, Route, WebSocketRoute

from chatmemory import ChatMemory, Principal
from tests.plugins._serving import loopback_socket, serving
from tests.plugins.server.conftest import Served, ok


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [r for k, v in node.items() for r in ([v] if k == "$ref" else _refs(v))]
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


async def test_every_route_is_documented_and_every_documented_path_exists(
    api: Served, memory: ChatMemory, tmp_path: Path
) -> None:
    async with api.client(None) as http:
        document = ok(await http.get(api.url + "/openapi.json"))
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}

    app = create_app(memory, verifier=TokenFileVerifier(tmp_path / "none.json"))
    served: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            sockets.add(route.path)
        elif isinstance(route, Route) and route.path != "/openapi.json":
            served |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    assert served == documented
    # Each WebSocket shares its path with a documented event stream.
    assert sockets and sockets <= {p for m, p in documented if p.endswith("/events")}

    schemas = document["components"]["schemas"]
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in _refs(document))
    assert {"Message", "Conversation", "AppendMessages", "Error"} <= set(schemas)
    ids = {name: str(uuid.uuid4()) for name in ("conversation_id", "history_id", "message_id")}
    async with api.client("bob") as http:
        for method, path in sorted(documented):
            # A stream stays open: only its head is read.
            async with http.stream(method, path.removeprefix("/v1").format(**ids)) as response:
                if response.status_code < 400:
                    continue
                await response.aread()
                kind = response.json()["error"]["type"]
                assert kind not in {"RouteNotFound", "MethodNotAllowed"}, (method, path)


async def test_mounted_under_a_prefix_with_the_hosts_lifespan(
    db_url: str, memory: ChatMemory, token_file: tuple[Path, dict[str, str]]
) -> None:
    path, tokens = token_file
    inner = create_app(db_url, verifier=TokenFileVerifier(path))
    ended: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner.router.lifespan_context(inner):
            yield
        ended.append(True)

    outer = Starlette(routes=[Mount("/chat", app=inner)], lifespan=lifespan)
    async with serving(outer, loopback_socket()) as url:
        mounted = Served(url + "/chat", tokens)
        async with mounted.client() as http:
            cid = ok(await http.post("/conversations", json={"title": "Mounted"}), 201)["id"]
            assert ok(await http.get(f"/conversations/{cid}"))["title"] == "Mounted"
            document = ok(await http.get(url + "/chat/openapi.json"))
            assert document["servers"] == [{"url": "/chat"}]
        async with mounted.client("bob") as http:
            assert (await http.get(f"/conversations/{cid}")).status_code == 404
    assert ended == [True]
    assert (await memory.scoped(Principal("alice")).get_conversation(cid)).title == "Mounted"


async def test_the_document_is_built_once_for_each_prefix(
    api: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the document takes about half a second of the event loop's time: a server
    that built it for every request would stall every other request and stream meanwhile."""
    built: list[str | None] = []

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        built.append(kwargs.get("server"))
        return openapi_document(*args, **kwargs)

    monkeypatch.setattr(server_app, "openapi_document", counted)
    server_app._openapi_body.cache_clear()
    async with api.client(None) as http:
        first = [ok(await http.get(api.url + "/openapi.json")) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    assert "servers" not in first[0]
    assert built == [None]
