"""record_run (one call, all or nothing), delete_message, delete_history and the bounded export."""

from __future__ import annotations

import pytest
from chatmemory_mcp.run_tools import EXPORT_BYTES

from chatmemory import ChatMemory, Principal
from tests.plugins.mcp_server.conftest import Connect, call, fail


@pytest.fixture
def mode() -> str:
    """One protocol mode: what is tested here does not depend on it (test_reading covers both)."""
    return "auto"


RUN = [
    {"role": "user", "content": "Note: buy milk", "key": "u1"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "save", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "saved"},
    {"role": "assistant", "content": "Noted."},
]


async def test_record_run_starts_a_conversation_and_closes_the_run(connect: Connect) -> None:
    async with connect(client="notes-app") as client:
        run = await call(
            client,
            "record_run",
            {
                "title": "Notes",
                "model": "gpt-4.1",
                "agent": "notes",
                "messages": RUN,
                "usage": {"input_tokens": 30},
            },
        )
        again = await call(
            client,
            "record_run",
            {
                "conversation_id": run["conversation_id"],
                "model": "gpt-4.1",
                "messages": RUN[:1],
                "status": "failed",
            },
        )
        detail = await call(client, "get_conversation", {"conversation_id": run["conversation_id"]})
        context = await call(client, "get_context", {"conversation_id": run["conversation_id"]})
    assert run["new_conversation"] is True
    assert "new_conversation" not in again
    history = run["history"]
    assert (history["status"], history["model"], history["usage"]) == (
        "completed",
        "gpt-4.1",
        {"input_tokens": 30},
    )
    assert history["metadata"] == {"agent": "notes", "mcp_client": {"name": "notes-app", "version": "1.0"}}
    assert "finished_at" in history
    assert [m["seq"] for m in run["messages"]] == [1, 2, 3, 4]
    assert [m["seq"] for m in again["messages"]] == [5]
    assert again["history"]["status"] == "failed"
    assert detail["conversation"]["title"] == "Notes"
    assert detail["conversation"]["message_count"] == 5
    assert [h["status"] for h in detail["histories"]] == ["completed", "failed"]
    assert context["messages"][1]["tool_calls"][0]["name"] == "save"


async def test_record_run_writes_nothing_when_any_part_is_bad(connect: Connect, memory: ChatMemory) -> None:
    bad_message = [*RUN, {"role": "user", "content": [{"type": "video"}]}]
    async with connect() as client:
        refused = await fail(client, "record_run", {"title": "x", "model": "m", "messages": bad_message})
        conv = await call(client, "start_conversation", {})
        with_title = await fail(
            client, "record_run", {"conversation_id": conv["id"], "title": "t", "model": "m", "messages": RUN}
        )
        too_long = await fail(
            client,
            "record_run",
            {"conversation_id": conv["id"], "model": "m", "messages": RUN, "error": "e" * 10_001},
        )
        detail = await call(client, "get_conversation", {"conversation_id": conv["id"]})
    assert "`messages.4.content.0" in refused
    assert "`title`" in with_title
    assert "`error`" in too_long
    assert detail["histories"] == []
    scope = memory.scoped(Principal("alice"))
    assert [str(c.id) for c in (await scope.list_conversations()).items] == [detail["conversation"]["id"]]


async def test_delete_message_and_history(connect: Connect) -> None:
    async with connect() as client, connect(Principal("bob")) as bob:
        first = await call(client, "record_run", {"model": "m", "messages": RUN})
        cid = first["conversation_id"]
        second = await call(client, "record_run", {"conversation_id": cid, "model": "m", "messages": RUN[:1]})
        message_id = first["messages"][0]["id"]
        assert "not found" in await fail(bob, "delete_message", {"message_id": message_id})
        assert await call(client, "delete_message", {"message_id": message_id}) == {
            "id": message_id,
            "deleted": True,
        }
        gone = await fail(client, "delete_message", {"message_id": message_id})
        history_id = second["history"]["id"]
        assert await call(client, "delete_history", {"history_id": history_id}) == {
            "id": history_id,
            "deleted": True,
        }
        listed = await call(client, "list_messages", {"conversation_id": cid})
        detail = await call(client, "get_conversation", {"conversation_id": cid})
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert "not found" in gone
    assert [m["seq"] for m in listed["items"]] == [2, 3, 4]
    assert [h["id"] for h in detail["histories"]] == [first["history"]["id"]]
    assert detail["conversation"]["message_count"] == 3
    for name in ("delete_conversation", "delete_message", "delete_history"):
        assert "soft-delete" in (tools[name].description or "").lower()
        assert "purge" in (tools[name].description or "")


async def test_export_is_whole_but_bounded(connect: Connect) -> None:
    async with connect() as client:
        run = await call(client, "record_run", {"title": "Small", "model": "m", "messages": RUN})
        exported = await call(client, "export_conversation", {"conversation_id": run["conversation_id"]})
        big = [{"role": "user", "content": "x" * 99_000} for _ in range(EXPORT_BYTES // 99_000 + 1)]
        large = await call(client, "record_run", {"model": "m", "messages": big})
        refused = await fail(client, "export_conversation", {"conversation_id": large["conversation_id"]})
    document = exported["document"]
    assert document["conversation"]["title"] == "Small"
    assert exported["bytes"] > 0
    assert "too large to export" in refused
    assert "list_messages" in refused


async def test_a_record_run_retried_with_its_keys_records_the_run_once(
    connect: Connect, memory: ChatMemory
) -> None:
    keyed = [
        {"role": "user", "content": "Find me a hotel in Rome", "key": "t1-user"},
        {"role": "assistant", "content": "Hotel Artemide.", "key": "t1-assistant"},
    ]
    async with connect() as client:
        conv = await call(client, "start_conversation", {"title": "Trip"})
        run = {"conversation_id": conv["id"], "model": "m", "messages": keyed}
        first = await call(client, "record_run", run)
        again = await call(client, "record_run", run)
    assert [m["id"] for m in again["messages"]] == [m["id"] for m in first["messages"]]
    assert all(m.get("deduplicated") for m in again["messages"])
    transcript = await memory.scoped(Principal("alice")).transcript(conv["id"])
    assert [m.content for m in transcript] == ["Find me a hotel in Rome", "Hotel Artemide."]
