"""Record a run through the chatmemory MCP server, the way an agent does, then read it back.

Starts `chatmemory-mcp stdio` as a subprocess (what a desktop client's MCP configuration
does), acting as the principal in CHATMEMORY_PRINCIPAL, and talks to it with the official
`mcp` client: start_conversation, start_history, append_messages (with keys, so a retry is
safe), finish_history, then get_context to resume.

    uv run examples/mcp_agent.py [--url URL] [--as PRINCIPAL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.types import Implementation

MODEL = "claude-sonnet-4-5"


def server(url: str | None, principal: str) -> StdioServerParameters:
    """How to start the server: the principal is fixed here, never taken from tool arguments."""
    env = {"CHATMEMORY_PRINCIPAL": principal}
    if url:
        env["CHATMEMORY_URL"] = url  # else the server uses the default SQLite file
    command = shutil.which("chatmemory-mcp")
    if command is not None:
        return StdioServerParameters(command=command, args=["stdio"], env=env)
    return StdioServerParameters(command=sys.executable, args=["-m", "chatmemory_mcp", "stdio"], env=env)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool; its structured result. A tool error says what went wrong and what to do next."""
    result = await client.call_tool(tool, arguments)
    if result.is_error or result.structured_content is None:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise RuntimeError(f"{tool} failed: {text}")
    structured: dict[str, Any] = result.structured_content
    return structured


async def main(url: str | None, principal: str) -> None:
    agent = Implementation(name="release-writer-app", version="1.0")  # recorded with each run it starts
    async with Client(server(url, principal), client_info=agent) as client:
        me = await call(client, "whoami")
        tools = sorted(tool.name for tool in (await client.list_tools()).tools)
        print(f"connected as {me['principal_id']} ({me['auth']}); tools: {', '.join(tools)}")

        conversation = await call(client, "start_conversation", title="Release notes v1.3 (MCP)")
        run = await call(
            client,
            "start_history",
            conversation_id=conversation["id"],
            model=MODEL,
            agent="release-writer",
            system_prompts=["You write release notes from the changelog."],
        )
        call_part = {
            "type": "tool_call",
            "id": "call_1",
            "name": "read_changelog",
            "arguments": {"since": "v1.2"},
        }
        changelog = "- resumable uploads\n- fix: crash on empty config"
        messages = [
            {"role": "user", "content": "Write the release notes for v1.3.", "key": "u1"},
            {"role": "assistant", "content": [call_part], "key": "a1"},
            {"role": "tool", "content": [{"type": "tool_result", "call_id": "call_1", "content": changelog}]},
            {"role": "assistant", "content": "v1.3 adds resumable uploads and fixes a crash.", "key": "a2"},
        ]
        stored = await call(client, "append_messages", history_id=run["id"], messages=messages)
        print(f"appended seq {[m['seq'] for m in stored['messages']]} to history {run['id']}")

        # A retry after a timeout re-sends the same key: the stored message comes back, no duplicate.
        again = await call(client, "append_messages", history_id=run["id"], messages=[messages[-1]])
        resent = again["messages"][0]
        added = "nothing added" if resent.get("deduplicated") else "ADDED AGAIN"
        print(f"re-sent key a2: seq {resent['seq']} again, {added}")

        done = await call(
            client, "finish_history", history_id=run["id"], usage={"input_tokens": 930, "output_tokens": 41}
        )
        print(f"history {done['status']}, model={done['model']}, client={done['metadata']['mcp_client']}")

        # What a new session would load to carry on: the latest messages within a token budget.
        context = await call(client, "get_context", conversation_id=conversation["id"], max_tokens=2000)
        print(f"context: {len(context['messages'])} messages, ~{context['estimated_tokens']} tokens")
        for m in context["messages"]:
            calls = [f"{c['name']}({c['arguments']})" for c in m.get("tool_calls", [])]
            text = m.get("content", "").replace("\n", " ") or f"[{', '.join(calls)}]"
            print(f"  {m['seq']:>3} {m['role']:<9} {m.get('model', ''):<20} {text}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("CHATMEMORY_URL"), help="database URL")
    parser.add_argument("--as", dest="principal", default=os.environ.get("CHATMEMORY_PRINCIPAL", "alice"))
    args = parser.parse_args()
    asyncio.run(main(args.url, args.principal))
