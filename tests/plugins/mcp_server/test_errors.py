"""Bad arguments for every tool, and what the model is told: what failed and what to do next."""

from __future__ import annotations

from typing import Any

import pytest
from chatmemory_mcp.errors import STORAGE_UNAVAILABLE
from sqlalchemy import text

from chatmemory import ChatMemory
from tests.plugins.mcp_server.conftest import Connect, call, fail

UNKNOWN = "01a20ae9-0000-7000-8000-000000000000"

# (tool, arguments, a phrase the error must contain). {cid} and {hid} are a live conversation and history.
BAD: dict[str, list[tuple[dict[str, Any], str]]] = {
    "start_conversation": [
        ({"title": "t" * 201}, "title"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"title": 7}, "title"),
    ],
    "list_conversations": [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"cursor": "garbage"}, "`cursor`"),
        ({"archived": "maybe"}, "archived"),
    ],
    "get_conversation": [
        ({}, "conversation_id"),
        ({"conversation_id": "not-a-uuid"}, "`conversation_id`"),
        ({"conversation_id": UNKNOWN}, "start_conversation"),
        ({"conversation_id": "{cid}", "cursor": "garbage"}, "`cursor`"),
        ({"conversation_id": "{cid}", "limit": 500}, "limit"),
    ],
    "update_conversation": [
        ({"title": "x"}, "conversation_id"),
        ({"conversation_id": UNKNOWN, "title": "x"}, "not found"),
        ({"conversation_id": "{cid}", "title": "t" * 201}, "title"),
        ({"conversation_id": "{cid}", "pinned": "sometimes"}, "pinned"),
    ],
    "delete_conversation": [
        ({}, "conversation_id"),
        ({"conversation_id": UNKNOWN}, "list_conversations"),
    ],
    "start_history": [
        ({"conversation_id": "{cid}"}, "model"),
        ({"conversation_id": "{cid}", "model": ""}, "model"),
        ({"conversation_id": "{cid}", "model": "   "}, "`model`"),
        ({"conversation_id": UNKNOWN, "model": "m"}, "not found"),
        ({"conversation_id": "{cid}", "model": "m", "system_prompts": "one string"}, "system_prompts"),
    ],
    "finish_history": [
        ({}, "history_id"),
        ({"history_id": "{hid}", "status": "done"}, "status"),
        ({"history_id": UNKNOWN}, "start_history"),
        ({"history_id": "{hid}", "usage": "lots"}, "usage"),
    ],
    "append_messages": [
        ({"history_id": "{hid}", "messages": []}, "messages"),
        ({"history_id": "{hid}", "messages": [{"role": "user", "content": "x"}] * 101}, "messages"),
        ({"history_id": "{hid}", "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"history_id": "{hid}", "messages": [{"role": "user"}]}, "content"),
        ({"history_id": "{hid}", "messages": [{"role": "user", "content": "x", "model": "m"}]}, "model"),
        ({"history_id": "{hid}", "messages": [{"role": "user", "content": "x", "key": ""}]}, "key"),
        ({"history_id": "{hid}", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "content"),
        (
            {"history_id": "{hid}", "messages": [{"role": "user", "content": "a", "key": "k"}] * 2},
            "share a key",
        ),
        ({"history_id": UNKNOWN, "messages": [{"role": "user", "content": "x"}]}, "not found"),
    ],
    "list_messages": [
        ({}, "give conversation_id or history_id"),
        ({"conversation_id": "{cid}", "limit": 0}, "limit"),
        ({"conversation_id": "{cid}", "cursor": "garbage"}, "`cursor`"),
        ({"conversation_id": "{cid}", "max_chars": 10}, "max_chars"),
        ({"history_id": UNKNOWN}, "not found"),
    ],
    "search_messages": [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "x" * 1_001}, "query"),
        ({"query": "x", "role": "robot"}, "role"),
        ({"query": "x", "limit": 51}, "limit"),
        ({"query": "x", "cursor": "garbage"}, "`cursor`"),
        ({"query": "x", "conversation_id": UNKNOWN}, "not found"),
    ],
    "get_context": [
        ({}, "conversation_id"),
        ({"conversation_id": UNKNOWN}, "list_conversations"),
        ({"conversation_id": "{cid}", "max_tokens": 10}, "max_tokens"),
        ({"conversation_id": "{cid}", "max_tokens": 1_000_000}, "max_tokens"),
        ({"conversation_id": "{cid}", "max_messages": 0}, "max_messages"),
    ],
}


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize("tool", sorted(BAD))
async def test_bad_arguments_are_tool_errors_naming_the_argument(connect: Connect, tool: str) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "m"})
        ids = {"cid": conv["id"], "hid": run["id"]}
        for arguments, phrase in BAD[tool]:
            message = await fail(client, tool, _fill(arguments, ids))
            assert phrase in message, (arguments, message)
        # Nothing was written by the failed calls.
        page = await call(client, "list_messages", {"conversation_id": conv["id"]})
        assert page["items"] == []
        assert len((await call(client, "list_conversations"))["items"]) == 1


async def test_whoami_refuses_arguments(connect: Connect) -> None:
    # whoami has no parameters: identity never comes from arguments.
    async with connect() as client:
        refused = await fail(client, "whoami", {"principal": "root", "admin": True})
        me = await call(client, "whoami")
    assert "unknown argument `principal`" in refused
    assert me["principal_id"] == "alice"
    assert "admin" not in me  # false, the default, is left out


async def test_a_database_failure_is_a_generic_message(
    memory: ChatMemory, backend: str, connect: Connect
) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        async with memory.engine.begin() as conn:
            await conn.execute(
                text("DROP TABLE chat_messages" + (" CASCADE" if backend == "postgres" else ""))
            )
        message = await fail(client, "list_messages", {"conversation_id": conv["id"]})
    assert STORAGE_UNAVAILABLE in message
    for leak in ("chat_messages", "SELECT", "sqlite", "postgres", "Error:", "relation"):
        assert leak not in message
