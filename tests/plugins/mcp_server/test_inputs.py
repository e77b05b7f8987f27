"""What the tools take: unknown arguments refused, one wording for every input error, OpenAI
messages, idempotent retries, fresh write results, limits and descriptions in the schemas."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mcp import MCPError

from chatmemory import ChatMemory, Principal
from chatmemory.formats import to_openai
from tests.plugins.mcp_server.conftest import Connect, call, fail


@pytest.fixture
def mode() -> str:
    """One protocol mode: what is tested here does not depend on it (test_reading covers both)."""
    return "auto"


ERROR = re.compile(
    r"^\w+: invalid argument `[\w.]+`: [^\n]+\. (Send [^\n]+|Fix it and call the tool again)\.$"
)


async def test_unknown_arguments_are_refused_naming_the_accepted_ones(connect: Connect) -> None:
    async with connect() as client:
        refused = await fail(client, "start_conversation", {"name": "Trip"})
        conv = await call(client, "start_conversation", {"title": "Trip"})
        update = await fail(client, "update_conversation", {"conversation_id": conv["id"], "name": "Rome"})
        listed = await call(client, "list_conversations", {})
        # Aliases keep working.
        aliased = await call(client, "get_conversation", {"conversation": conv["id"], "page_size": 1})
    assert "unknown argument `name`" in refused
    assert "Accepted arguments: metadata, title." in refused
    assert "unknown argument `name`" in update
    assert "title" in update
    assert [c["title"] for c in listed["items"]] == ["Trip"]  # nothing was created by the refused call
    assert aliased["conversation"]["id"] == conv["id"]


BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("start_history", {"conversation_id": "{cid}"}, "model"),
    ("list_messages", {"conversation_id": "{cid}", "limit": 1_000}, "limit"),
    ("get_context", {"conversation_id": "{cid}", "max_tokens": "lots"}, "max_tokens"),
    ("start_conversation", {"title": "t" * 201}, "title"),
    ("update_conversation", {"conversation_id": "{cid}", "metadata": ["a"]}, "metadata"),
    ("finish_history", {"history_id": "{hid}", "status": "done"}, "status"),
    ("list_conversations", {"cursor": "garbage"}, "cursor"),
    ("get_conversation", {"conversation_id": "nope"}, "conversation_id"),
    (
        "append_messages",
        {"history_id": "{hid}", "messages": [{"role": "robot", "content": "x"}]},
        "messages.0.role",
    ),
    (
        "append_messages",
        {"history_id": "{hid}", "messages": [{"role": "user", "content": "x"}] * 101},
        "messages",
    ),
    (
        "append_messages",
        {"history_id": "{hid}", "messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
        "messages.0.content.0",
    ),
    (
        "append_messages",
        {"history_id": "{hid}", "messages": [{"role": "user", "content": "x" * 100_001}]},
        "messages.0.content",
    ),
    (
        "append_messages",
        {"history_id": "{hid}", "messages": [{"role": "user", "text": "x", "x": 1}]},
        "messages.0.x",
    ),
    (
        "append_messages",
        {
            "history_id": "{hid}",
            "messages": [
                {"role": "assistant", "content": [{"type": "tool_call", "name": "f", "arguments": {}}]}
            ],
        },
        "messages.0.content.0.id",
    ),
]


async def test_every_input_error_reads_the_same_way(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "m"})
        for tool, arguments, field in BAD_CALLS:
            filled = {
                k: v.format(cid=conv["id"], hid=run["id"]) if isinstance(v, str) else v
                for k, v in arguments.items()
            }
            text = await fail(client, tool, filled)
            assert ERROR.match(text), text
            assert f"`{field}`" in text, text
            assert len(text) < 300, text
            for noise in (
                "pydantic",
                "https://",
                "validation error",
                "tagged-union",
                "Input should",
                "Error executing",
                "input tag",
            ):
                assert noise not in text, text


async def test_messages_in_openai_chat_completions_form(connect: Connect, memory: ChatMemory) -> None:
    openai = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4°C"},
        {"role": "assistant", "content": "4°C in Oslo.", "key": "final"},
    ]
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "gpt-4.1"})
        stored = await call(client, "append_messages", {"history_id": run["id"], "messages": openai})
        listed = (await call(client, "list_messages", {"history_id": run["id"]}))["items"]
        wrong = await fail(
            client,
            "append_messages",
            {"history_id": run["id"], "messages": [{"role": "user", "content": "x", "tool_call_id": "c"}]},
        )
    assert [m["role"] for m in stored["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert listed[2]["tool_calls"] == [{"id": "call_1", "name": "weather", "arguments": '{"city":"Oslo"}'}]
    assert (listed[3]["tool_call_id"], listed[3]["content"]) == ("call_1", "4°C")
    assert "`messages.0.tool_call_id`" in wrong
    # The originals are kept: the store hands them back to an OpenAI client as they were sent.
    history = await memory.scoped(Principal("alice")).get_history(run["id"])
    assert history.messages is not None
    assert to_openai(history.messages)[2:4] == openai[2:4]


async def test_retries_are_idempotent_and_say_so(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "m"})
        first = await call(
            client,
            "append_messages",
            {"history_id": run["id"], "messages": [{"role": "user", "content": "a", "key": "k1"}]},
        )
        again = await call(
            client,
            "append_messages",
            {
                "history_id": run["id"],
                "messages": [
                    {"role": "user", "content": "a", "key": "k1"},
                    {"role": "user", "content": "b", "key": "k2"},
                ],
            },
        )
        done = await call(
            client, "finish_history", {"history_id": run["id"], "status": "failed", "error": "boom"}
        )
        retried = await call(
            client, "finish_history", {"history_id": run["id"], "status": "failed", "error": "boom"}
        )
    assert "deduplicated" not in first["messages"][0]
    assert again["messages"][0] == first["messages"][0] | {"deduplicated": True}
    assert "deduplicated" not in again["messages"][1]
    assert retried == done


async def test_a_key_stored_by_a_writer_whose_clock_runs_ahead_is_reported_deduplicated(
    connect: Connect, memory: ChatMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (another host on a shared PostgreSQL, or a concurrent call that stored the
    key a moment after this one began) may stamp the message later than this call's start: the
    message was still already stored, and the retry must say so."""
    chat = memory.scoped(Principal("alice"))
    conv = await chat.start_conversation()
    run = await chat.start_history(conv.id, model="m")
    ahead = datetime.now(UTC) + timedelta(seconds=30)
    with monkeypatch.context() as clock:
        clock.setattr("chatmemory._queries.now", lambda: ahead)
        (first,) = await chat.append_messages(run.id, [{"role": "user", "content": "a", "key": "k1"}])
    async with connect() as client:
        again = await call(
            client,
            "append_messages",
            {
                "history_id": str(run.id),
                "messages": [
                    {"role": "user", "content": "a", "key": "k1"},
                    {"role": "user", "content": "b", "key": "k2"},
                ],
            },
        )
    assert again["messages"][0] == {
        "id": str(first.id),
        "seq": 1,
        "role": "user",
        "key": "k1",
        "deduplicated": True,
    }
    assert "deduplicated" not in again["messages"][1]
    assert [m.content for m in await chat.transcript(conv.id)] == ["a", "b"]


async def test_one_key_sent_by_two_clients_at_once_is_stored_once_and_reported_once(
    connect: Connect, memory: ChatMemory
) -> None:
    chat = memory.scoped(Principal("alice"))
    conv = await chat.start_conversation()
    run = await chat.start_history(conv.id, model="m")
    sent = {"history_id": str(run.id), "messages": [{"role": "user", "content": "a", "key": "k1"}]}
    async with connect() as first, connect() as second:
        answers = await asyncio.gather(*(call(c, "append_messages", sent) for c in (first, second) * 3))
    stored = [answer["messages"][0] for answer in answers]
    assert len({m["id"] for m in stored}) == 1
    assert sum(bool(m.get("deduplicated")) for m in stored) == len(stored) - 1
    assert [m.content for m in await chat.transcript(conv.id)] == ["a"]


async def test_update_conversation_returns_fresh_counts(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {"title": "t"})
        assert conv["message_count"] == 0
        run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "m"})
        messages = [{"role": "user", "content": f"message {i}"} for i in range(30)]
        await call(client, "append_messages", {"history_id": run["id"], "messages": messages})
        updated = await call(client, "update_conversation", {"conversation_id": conv["id"], "pinned": True})
    assert (updated["message_count"], updated["last_message_preview"]) == (30, "message 29")
    assert updated["pinned"] is True


def _empty_schemas(node: Any) -> bool:
    if isinstance(node, dict):
        return any(v == {} or _empty_schemas(v) for k, v in node.items() if k not in ("properties",)) or any(
            v == {} or _empty_schemas(v) for v in node.get("properties", {}).values()
        )
    if isinstance(node, list):
        return any(_empty_schemas(v) for v in node)
    return False


async def test_schemas_show_limits_and_describe_every_free_form_argument(connect: Connect) -> None:
    async with connect() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    append = tools["append_messages"].input_schema
    messages = append["properties"]["messages"]
    assert (messages["minItems"], messages["maxItems"]) == (1, 100)
    message = append["$defs"]["MessageIn"]
    text = next(o for o in message["properties"]["content"]["anyOf"] if o.get("type") == "string")
    assert text["maxLength"] == 100_000
    assert "100000" in message["properties"]["content"]["description"]
    assert message["additionalProperties"] is False
    assert tools["start_conversation"].input_schema["properties"]["title"]["maxLength"] == 200
    described = {
        "start_history": ["agent", "system_prompts", "metadata", "model"],
        "append_messages": ["messages"],
        "list_messages": ["newest_first", "max_chars"],
        "search_messages": ["role", "query"],
        "get_context": ["max_messages", "max_tokens"],
        "finish_history": ["status", "usage", "error"],
        "record_run": ["messages", "status", "metadata"],
    }
    for tool, names in described.items():
        for name in names:
            assert tools[tool].input_schema["properties"][name].get("description"), (tool, name)
    assert tools["get_context"].input_schema["properties"]["max_messages"]["maximum"] == 500
    for tool in tools.values():
        assert not _empty_schemas(tool.input_schema), tool.name
        assert not _empty_schemas(tool.output_schema), tool.name
        assert "JsonValue" not in str(tool.input_schema) or tool.input_schema["$defs"]["JsonValue"] != {}


async def test_a_missing_resource_answers_resource_not_found(connect: Connect) -> None:
    async with connect(Principal("bob")) as bob, connect() as alice:
        conv = await call(alice, "start_conversation", {})
        for uri in ("chatmemory://conversations/{id}", "chatmemory://conversations/{id}/transcript"):
            for target in (uri.format(id=conv["id"]), uri.format(id="01a20ae9-0000-7000-8000-000000000000")):
                with pytest.raises(MCPError) as raised:
                    await bob.read_resource(target)
                assert raised.value.error.code == -32002
                assert "not found" in raised.value.error.message
