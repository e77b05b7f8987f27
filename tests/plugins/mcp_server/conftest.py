"""Fixtures for the MCP server tests: in-memory clients on the shared ``memory`` store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from chatmemory_mcp import build_server
from mcp import Client
from mcp.types import Implementation

from chatmemory import ChatMemory, Principal

Connect = Callable[..., AbstractAsyncContextManager[Client]]


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    """Both protocol modes the SDK speaks: 2026-07-28 (sessionless) and the initialize handshake."""
    return str(request.param)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ChatMemory]:
    """A store on a SQLite file, for server tests that are about HTTP and not about storage."""
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'server.db'}", migrate=True) as opened:
        yield opened


@pytest.fixture
def connect(memory: ChatMemory, mode: str) -> Connect:
    """Open an in-memory client acting as a principal (default alice)."""

    @asynccontextmanager
    async def open_client(
        principal: Principal | None = None, client: str = "test-client"
    ) -> AsyncIterator[Client]:
        server = build_server(principal=principal or Principal("alice"), memory=memory)
        info = Implementation(name=client, version="1.0")
        async with Client(server, mode=mode, client_info=info) as opened:  # type: ignore[arg-type]
            yield opened

    return open_client


async def call(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a tool that must succeed; its structured content."""
    result = await client.call_tool(tool, arguments or {})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def fail(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> str:
    """Call a tool that must fail as a tool error; its text."""
    result = await client.call_tool(tool, arguments or {})
    assert result.is_error, result.structured_content
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert "Traceback" not in text
    return text
