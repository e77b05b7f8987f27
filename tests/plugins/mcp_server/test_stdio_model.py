"""What the model sees, through the real ``chatmemory-mcp stdio`` subprocess on both backends."""

from __future__ import annotations

import sys
from pathlib import Path

from chatmemory_mcp.server import CORE_TOOLS
from mcp import Client, StdioServerParameters
from mcp.types import TextContent

from tests.plugins.mcp_server.conftest import call, fail


def _server(db_url: str, *args: str) -> StdioServerParameters:
    env = {"CHATMEMORY_URL": db_url, "CHATMEMORY_PRINCIPAL": "alice"}
    return StdioServerParameters(
        command=sys.executable, args=["-m", "chatmemory_mcp", "stdio", *args], env=env
    )


async def test_a_run_recorded_and_resumed_over_stdio(db_url: str) -> None:
    older = [{"role": "user", "content": f"turn {i}"} for i in range(20)]
    calls = [{"id": "call_1", "type": "function", "function": {"name": "fetch", "arguments": '{"url":"a"}'}}]
    run = [
        *older,
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "y" * 99_000},
    ]
    async with Client(_server(db_url)) as client:
        recorded = await call(client, "record_run", {"title": "Fetch", "model": "gpt-4.1", "messages": run})
        cid = recorded["conversation_id"]
        retried = await call(
            client, "finish_history", {"history_id": recorded["history"]["id"], "status": "completed"}
        )
        refused = await fail(client, "update_conversation", {"conversation_id": cid, "name": "x"})
        result = await client.call_tool("get_context", {"conversation_id": cid, "max_tokens": 2_000})
        listed = await call(
            client, "list_messages", {"conversation_id": cid, "newest_first": True, "limit": 2}
        )
    assert retried["status"] == "completed"
    assert "unknown argument `name`" in refused
    (text,) = result.content
    assert isinstance(text, TextContent)
    assert len(text.text.encode()) <= 8_000
    context = result.structured_content
    assert context is not None
    assert context["omitted"] == 0
    assert context["messages"][-1]["truncated"] is True
    assert context["messages"][-2]["tool_calls"] == [
        {"id": "call_1", "name": "fetch", "arguments": '{"url":"a"}'}
    ]
    assert [m.get("tool_call_id") for m in listed["items"]] == ["call_1", None]


async def test_the_core_tool_set_over_stdio(tmp_path: Path) -> None:
    # Which tools are listed does not depend on the store: one backend is enough.
    async with Client(_server(f"sqlite:///{tmp_path / 'core.db'}", "--tools", "core")) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert names == CORE_TOOLS
