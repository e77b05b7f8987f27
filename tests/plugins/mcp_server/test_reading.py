"""What a model reads back: tool calls in every read, and get_context bounded by what is sent."""

from __future__ import annotations

import json
from typing import Any

from mcp import Client
from mcp.types import TextContent, TextResourceContents

from tests.plugins.mcp_server.conftest import Connect, call

CALL = {"type": "tool_call", "id": "call_7", "name": "get_weather", "arguments": {"city": "Oslo"}}
RESULT = {"type": "tool_result", "call_id": "call_7", "content": "4°C, rain"}


async def _run(client: Client, messages: list[dict[str, Any]]) -> tuple[str, str]:
    conv = await call(client, "start_conversation", {"title": "Weather"})
    run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "m"})
    for start in range(0, len(messages), 100):
        batch = messages[start : start + 100]
        await call(client, "append_messages", {"history_id": run["id"], "messages": batch})
    return conv["id"], run["id"]


async def test_tool_calls_and_results_survive_every_read(connect: Connect) -> None:
    async with connect() as client:
        cid, _ = await _run(
            client,
            [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": [CALL]},
                {"role": "tool", "content": [RESULT]},
                {"role": "assistant", "content": "Rainy, 4°C."},
            ],
        )
        listed = (await call(client, "list_messages", {"conversation_id": cid}))["items"]
        context = (await call(client, "get_context", {"conversation_id": cid}))["messages"]
        resource = await client.read_resource(f"chatmemory://conversations/{cid}/transcript")

    expected_call = {"id": "call_7", "name": "get_weather", "arguments": '{"city":"Oslo"}'}
    for messages in (listed, context):
        assert messages[1]["tool_calls"] == [expected_call]
        assert (messages[2]["tool_call_id"], messages[2]["content"]) == ("call_7", "4°C, rain")
        assert "part_types" not in messages[1]
    assert isinstance(resource.contents[0], TextResourceContents)
    transcript = resource.contents[0].text
    assert 'get_weather({"city":"Oslo"})' in transcript
    assert "call_7" in transcript
    assert "4°C, rain" in transcript


def _sent(result: Any) -> tuple[int, int]:
    """Bytes of the structured copy (compact JSON) and of the text copy of a tool result."""
    (text,) = result.content
    assert isinstance(text, TextContent)
    structured = json.dumps(result.structured_content, separators=(",", ":"), ensure_ascii=False)
    return len(structured.encode()), len(text.text.encode())


def _nulls(value: Any) -> bool:
    if isinstance(value, dict):
        return any(v is None or _nulls(v) for v in value.values())
    if isinstance(value, list):
        return any(_nulls(v) for v in value)
    return False


async def test_get_context_response_stays_within_its_budget(connect: Connect) -> None:
    # Short messages: ids, sequence numbers and field names weigh more than the text itself.
    messages = [
        {
            "role": ("user", "assistant")[i % 2],
            "content": f"näive ✓ {i}",
            "key": f"k{i}",
            "metadata": {"i": i},
        }
        for i in range(300)
    ]
    async with connect() as client:
        cid, _ = await _run(client, messages)
        for max_tokens in (100, 1_000, 4_000):
            result = await client.call_tool("get_context", {"conversation_id": cid, "max_tokens": max_tokens})
            _check_budget(result, max_tokens)


def _check_budget(result: Any, max_tokens: int) -> None:
    assert not result.is_error
    structured_bytes, text_bytes = _sent(result)
    assert structured_bytes <= max_tokens * 4
    assert text_bytes <= max_tokens * 4
    data = result.structured_content
    assert data is not None
    assert json.loads(result.content[0].text) == data  # type: ignore[union-attr]
    assert "\n" not in result.content[0].text  # type: ignore[union-attr]
    assert not _nulls(data)
    assert data["estimated_tokens"] * 4 >= structured_bytes
    assert len(data["messages"]) + data["omitted"] == 300
    assert data["messages"][-1]["content"] == "näive ✓ 299"
    # Only the oldest message given may be clipped, to use what is left of the budget.
    assert not any(m.get("truncated") for m in data["messages"][1:])


async def test_one_huge_message_is_clipped_and_older_ones_still_fit(connect: Connect) -> None:
    older = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(31)]
    huge = {"role": "tool", "content": [RESULT | {"content": "x" * 99_950}]}
    async with connect() as client:
        cid, _ = await _run(client, [*older, {"role": "assistant", "content": [CALL]}, huge])
        result = await client.call_tool("get_context", {"conversation_id": cid, "max_tokens": 4_000})
    data = result.structured_content
    assert data is not None
    assert _sent(result)[0] <= 16_000
    messages = data["messages"]
    assert data["omitted"] == 0
    assert [m["content"] for m in messages[:31]] == [f"turn {i}" for i in range(31)]
    assert messages[31]["tool_calls"][0]["id"] == "call_7"
    clipped = messages[32]
    assert (clipped["truncated"], clipped["content_length"], clipped["tool_call_id"]) == (
        True,
        99_950,
        "call_7",
    )
    assert 1_000 < len(clipped["content"]) < 8_000
    assert data["truncated"] is True


async def test_messages_making_many_tool_calls_are_read_within_bounds(connect: Connect) -> None:
    """A page, a search and get_context stay bounded however many calls each message makes:
    the calls share one allowance per message, and those past it are counted, not sent."""
    calls = [
        {"type": "tool_call", "id": f"call_{i}", "name": "write_file", "arguments": {"text": "y" * 3_000}}
        for i in range(60)
    ]
    async with connect() as client:
        said = [{"type": "text", "text": "hello"}, *calls]
        cid, _ = await _run(client, [{"role": "assistant", "content": said} for _ in range(20)])
        page = await client.call_tool("list_messages", {"conversation_id": cid, "limit": 20})
        hits = await client.call_tool("search_messages", {"query": "hello", "limit": 20})
        context = await client.call_tool("get_context", {"conversation_id": cid, "max_tokens": 4_000})
    assert len((hits.structured_content or {})["items"]) == 20
    assert _sent(hits)[0] <= 150_000
    assert _sent(page)[0] <= 150_000  # 20 messages of 180,000 characters of calls each
    first = (page.structured_content or {})["items"][0]
    assert first["truncated"] is True
    assert first["tool_calls"][0] == {
        "id": "call_0",
        "name": "write_file",
        "arguments": first["tool_calls"][0]["arguments"],
    }
    assert first["tool_calls_omitted"] == 60 - len(first["tool_calls"])
    assert sum(len(c["id"]) + len(c["name"]) + len(c["arguments"]) for c in first["tool_calls"]) <= 2_001
    data = context.structured_content or {}
    assert _sent(context)[0] <= 16_000
    assert data["messages"], "the newest message is clipped to fit, not left out"
    assert data["messages"][-1]["tool_calls_omitted"] > 0


async def test_messages_of_many_parts_or_answering_many_calls_are_read_within_bounds(
    connect: Connect,
) -> None:
    images = [{"type": "image", "url": f"https://example.com/{i}.png"} for i in range(500)]
    answers = [{"type": "tool_result", "call_id": f"call_{i:0>100}", "content": "ok"} for i in range(100)]
    said = [{"role": "user", "content": images}] * 20 + [{"role": "tool", "content": answers}] * 20
    async with connect() as client:
        cid, _ = await _run(client, said)
        page = await client.call_tool("list_messages", {"conversation_id": cid, "limit": 40})
    assert _sent(page)[0] <= 150_000  # 20 x 500 part kinds and 20 x 100 answered call ids
    items = (page.structured_content or {})["items"]
    assert items[0]["part_types"] == ["image"]
    answered = items[20]
    assert answered["truncated"] is True
    assert answered["tool_call_id"].startswith(f"call_{0:0>100},call_{1:0>100},")
    assert len(answered["tool_call_id"]) <= 2_001
