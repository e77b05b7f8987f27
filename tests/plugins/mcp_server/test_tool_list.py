"""The size of ``tools/list``, which every client carries in its context, and the core tool set."""

from __future__ import annotations

import json
from pathlib import Path

from chatmemory_mcp import build_server
from chatmemory_mcp.cli import build_parser
from chatmemory_mcp.http_app import build_http_app
from chatmemory_mcp.server import CORE_TOOLS
from chatmemory_mcp.settings import HttpSettings
from mcp import Client
from mcp.types import Tool

from chatmemory import Principal
from tests.plugins.mcp_server._serving import http_client, loopback_socket, serving
from tests.plugins.mcp_server.conftest import fail

BEFORE = 33_288
"""Bytes of tools/list for the first twelve tools, before schemas and descriptions were compacted."""
FIRST_TWELVE = {
    "whoami",
    "start_conversation",
    "list_conversations",
    "get_conversation",
    "update_conversation",
    "delete_conversation",
    "start_history",
    "finish_history",
    "append_messages",
    "list_messages",
    "search_messages",
    "get_context",
}


def _bytes(tools: list[Tool]) -> int:
    listed = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    return len(json.dumps(listed, separators=(",", ":"), ensure_ascii=False).encode())


async def _tools(tmp_path: Path, tools: str) -> list[Tool]:
    server = build_server(principal=Principal("alice"), url=f"sqlite:///{tmp_path / 'x.db'}", tools=tools)  # type: ignore[arg-type]
    async with Client(server) as client:
        return list((await client.list_tools()).tools)


async def test_tools_list_is_at_most_half_its_former_size(tmp_path: Path) -> None:
    every = await _tools(tmp_path, "all")
    first = [t for t in every if t.name in FIRST_TWELVE]
    assert len(first) == 12
    assert _bytes(first) <= BEFORE // 2
    assert _bytes(every) <= 22_000  # sixteen tools now, still a third smaller than the twelve were
    for tool in every:
        assert tool.output_schema is not None, tool.name
        assert "title" not in tool.input_schema, tool.name
        assert "\n" not in (tool.description or ""), tool.name


async def test_the_core_set_is_small_and_nothing_else_is_callable(tmp_path: Path) -> None:
    core = await _tools(tmp_path, "core")
    assert {t.name for t in core} == CORE_TOOLS
    assert _bytes(core) <= 12_000
    server = build_server(principal=Principal("alice"), url=f"sqlite:///{tmp_path / 'y.db'}", tools="core")
    async with Client(server) as client:
        text = await fail(client, "start_history", {"conversation_id": "x", "model": "m"})
    assert "Unknown tool: start_history" in text
    assert "record_run" in text


async def test_http_serves_the_core_set_when_asked(tmp_path: Path) -> None:
    settings = HttpSettings(
        insecure_principal=Principal("alice"), database_url=f"sqlite:///{tmp_path / 'x.db'}", tools="core"
    )
    with loopback_socket() as sock:
        async with serving(build_http_app(settings), sock) as url, http_client(url, None) as client:
            listed = (await client.list_tools()).tools
    assert {t.name for t in listed} == CORE_TOOLS


def test_the_command_line_takes_the_tool_set_for_both_transports() -> None:
    parser = build_parser()
    assert parser.parse_args(["stdio", "--tools", "core"]).tools == "core"
    assert parser.parse_args(["http", "--tools", "core"]).tools == "core"
    assert parser.parse_args(["http"]).tools == "all"
