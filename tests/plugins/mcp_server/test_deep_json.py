"""JSON values nested as deeply as the store takes (128 levels) go through the MCP server both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chatmemory_mcp import TokenFile

from chatmemory import ChatMemory, Principal
from tests.plugins.mcp_server._serving import http_client
from tests.plugins.mcp_server.conftest import Connect, call
from tests.plugins.mcp_server.test_http import served


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


async def _round_trip(client: Any) -> None:
    conv = await call(client, "start_conversation", {"metadata": {"tree": _deep(127)}})
    run = await call(
        client, "start_history", {"conversation_id": conv["id"], "model": "m", "metadata": _deep(128)}
    )
    message = {"role": "user", "content": "deep", "metadata": _deep(128)}
    await call(client, "append_messages", {"history_id": run["id"], "messages": [message]})
    listed = await call(client, "list_messages", {"conversation_id": conv["id"]})
    assert listed["items"][0]["metadata"] == _deep(128)
    detail = await call(client, "get_conversation", {"conversation_id": conv["id"]})
    assert detail["conversation"]["metadata"]["tree"] == _deep(127)
    exported = await call(client, "export_conversation", {"conversation_id": conv["id"]})
    assert "deep" in str(exported)[: 10**9]
    found = await call(client, "search_messages", {"query": "deep"})
    assert found["items"]


async def test_in_memory(connect: Connect) -> None:
    async with connect() as client:
        await _round_trip(client)


@pytest.fixture
def token(tmp_path: Path) -> str:
    return TokenFile(tmp_path / "tokens.json").create(Principal("alice"))[0]


async def test_over_http(memory: ChatMemory, tmp_path: Path, token: str) -> None:
    async with served(memory, tmp_path) as url, http_client(url, token) as client:
        await _round_trip(client)
