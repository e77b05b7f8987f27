"""Calls the way models get them slightly wrong: what the server forgives, and how it refuses the rest."""

from __future__ import annotations

import pytest

from tests.plugins.mcp_server.conftest import Connect, call


@pytest.fixture
def mode() -> str:
    """One protocol mode: argument handling does not depend on it (test_reading covers both)."""
    return "auto"


async def test_ids_copied_with_surrounding_whitespace_are_accepted(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        run = await call(client, "start_history", {"conversation_id": f" {conv['id']}\n", "model": "m"})
        await call(
            client,
            "append_messages",
            {"history_id": f"\t{run['id']} ", "messages": [{"role": "user", "content": "hi"}]},
        )
        recorded = await call(
            client,
            "record_run",
            {
                "conversation_id": f"{conv['id']} ",
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
            },
        )
        listed = await call(client, "list_messages", {"conversation_id": f" {conv['id']} "})
    assert run["conversation_id"] == recorded["conversation_id"] == conv["id"]
    assert [m["content"] for m in listed["items"]] == ["hi", "x"]
