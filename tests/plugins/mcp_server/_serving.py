"""MCP clients of an app served on a real loopback socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation

from tests.plugins._serving import loopback_socket, serving

__all__ = ["MCP_HEADERS", "http_client", "loopback_socket", "post_raw", "serving"]

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@asynccontextmanager
async def http_client(url: str, token: str | None, mode: str = "auto") -> AsyncIterator[Client]:
    """An MCP client over streamable HTTP sending ``token`` as its bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(f"{url}/mcp", http_client=http)
        info = Implementation(name="http-test", version="2.0")
        async with Client(transport, mode=mode, client_info=info) as client:  # type: ignore[arg-type]
            yield client


async def post_raw(url: str, body: bytes, token: str | None = None) -> httpx2.Response:
    """One raw POST to the MCP endpoint."""
    headers = dict(MCP_HEADERS)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(f"{url}/mcp", content=body, headers=headers)
