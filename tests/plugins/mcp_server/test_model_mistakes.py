"""Calls the way models get them slightly wrong: what the server forgives, and how it refuses the rest."""

from __future__ import annotations

import re
import uuid

import pytest

from chatmemory import ChatMemory, Principal
from chatmemory.formats import to_anthropic
from tests.plugins.mcp_server.conftest import Connect, call, fail


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


ANTHROPIC = [
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather in Oslo?", "cache_control": {"type": "ephemeral"}}],
    },
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Call the tool.", "signature": "c2ln"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "4°C"}]},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
            },
        ],
    },
]


async def test_messages_in_anthropic_content_blocks(connect: Connect, memory: ChatMemory) -> None:
    async with connect() as client:
        run = await call(client, "record_run", {"model": "claude", "messages": ANTHROPIC})
        listed = (await call(client, "list_messages", {"conversation_id": run["conversation_id"]}))["items"]
        found = await call(client, "search_messages", {"query": "weather"})
        unknown = await fail(
            client,
            "record_run",
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "x"}}]}],
            },
        )
    assert listed[1]["tool_calls"] == [{"id": "toolu_1", "name": "weather", "arguments": '{"city":"Oslo"}'}]
    assert listed[1]["content"] == "Checking."
    assert (listed[2]["tool_call_id"], listed[2]["content"], listed[2]["part_types"]) == (
        "toolu_1",
        "4°C",
        ["image"],
    )
    assert {hit["message"]["seq"] for hit in found["items"]} >= {2}
    assert "`messages.0.content.0.source`" in unknown
    # The originals are kept: the store hands them back to an Anthropic client as they were sent.
    history = await memory.scoped(Principal("alice")).get_history(run["history"]["id"])
    assert history.messages is not None
    assert to_anthropic(history.messages)["messages"] == ANTHROPIC


async def test_results_leave_out_empty_objects(connect: Connect) -> None:
    async with connect() as client:
        started = await call(client, "start_conversation", {"title": "T"})
        listed = await call(client, "list_conversations", {})
        detail = await call(client, "get_conversation", {"conversation_id": started["id"]})
        run = await call(client, "record_run", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
        updated = await call(
            client, "update_conversation", {"conversation_id": started["id"], "metadata": {}}
        )
    for conversation in (started, listed["items"][0], detail["conversation"], updated):
        assert "metadata" not in conversation, conversation
    assert "usage" not in run["history"]


async def test_a_message_cursor_works_only_in_its_own_listing(connect: Connect) -> None:
    messages = [{"role": "user", "content": str(i)} for i in range(3)]
    async with connect() as client:
        one = await call(client, "record_run", {"model": "m", "messages": messages})
        two = await call(client, "record_run", {"model": "m", "messages": messages})
        page = await call(client, "list_messages", {"conversation_id": one["conversation_id"], "limit": 1})
        cursor = page["next_cursor"]
        following = await call(
            client, "list_messages", {"conversation_id": one["conversation_id"], "cursor": cursor}
        )
        elsewhere = await fail(
            client, "list_messages", {"conversation_id": two["conversation_id"], "cursor": cursor}
        )
        other_history = await fail(
            client, "list_messages", {"history_id": two["history"]["id"], "cursor": cursor}
        )
    assert [m["content"] for m in following["items"]] == ["1", "2"]
    for text in (elsewhere, other_history):
        assert "invalid argument `cursor`: is not a cursor from this listing" in text


async def test_ids_in_another_spelling_come_back_as_tools_return_them(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        cid = conv["id"]
        spelled = "{" + cid.upper() + "}"
        for _ in range(2):
            await call(
                client,
                "record_run",
                {"conversation_id": cid, "model": "m", "messages": [{"role": "user", "content": "x"}]},
            )
        first = await call(client, "get_conversation", {"conversation_id": spelled, "limit": 1})
        second = await call(
            client, "get_conversation", {"conversation_id": cid, "cursor": first["next_cursor"]}
        )
        context = await call(client, "get_context", {"conversation_id": spelled})
        exported = await call(client, "export_conversation", {"conversation_id": spelled})
        deleted = await call(client, "delete_conversation", {"conversation_id": spelled})
    assert len(first["histories"]) == len(second["histories"]) == 1
    assert first["histories"][0]["id"] != second["histories"][0]["id"]
    assert context["conversation_id"] == exported["conversation_id"] == deleted["id"] == cid


async def test_a_listed_message_gives_its_length_only_when_clipped(connect: Connect) -> None:
    long = "é" * 150 + "😀" * 150
    async with connect() as client:
        run = await call(
            client,
            "record_run",
            {
                "model": "m",
                "messages": [{"role": "user", "content": "short"}, {"role": "user", "content": long}],
            },
        )
        page = await call(client, "list_messages", {"history_id": run["history"]["id"], "max_chars": 200})
    short, clipped = page["items"]
    assert "content_length" not in short and "truncated" not in short
    assert (clipped["content"], clipped["content_length"], clipped["truncated"]) == (
        long[:200] + "…",
        300,
        True,
    )


async def test_a_refusal_of_a_well_formed_value_does_not_ask_for_its_type(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        titled = await fail(
            client,
            "record_run",
            {
                "conversation_id": conv["id"],
                "title": "T",
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
            },
        )
        keyed = await fail(
            client,
            "record_run",
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "a", "key": "k"},
                    {"role": "user", "content": "b", "key": "k"},
                ],
            },
        )
        modelled = await fail(
            client, "record_run", {"model": "m", "messages": [{"role": "user", "content": "a", "model": "x"}]}
        )
    assert titled.endswith("leave it out with conversation_id. Fix it and call the tool again."), titled
    for text in (keyed, modelled):
        assert text.endswith(". Fix it and call the tool again."), text


async def test_an_id_of_the_wrong_kind_is_named_for_what_it_is(connect: Connect) -> None:
    async with connect() as alice, connect(Principal("bob")) as bob:
        run = await call(alice, "record_run", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
        cid, hid, mid = run["conversation_id"], run["history"]["id"], run["messages"][0]["id"]
        as_conversation = await fail(alice, "start_history", {"conversation_id": hid, "model": "m"})
        message_as_conversation = await fail(alice, "get_context", {"conversation_id": mid})
        as_history = await fail(
            alice, "append_messages", {"history_id": cid, "messages": [{"role": "user", "content": "y"}]}
        )
        # Another principal's ids read exactly as ids that never existed.
        foreign = await fail(bob, "start_history", {"conversation_id": hid, "model": "m"})
        never = await fail(bob, "start_history", {"conversation_id": str(uuid.uuid4()), "model": "m"})
    assert (
        f"conversation {hid} not found: it is a history id (in conversation {cid}). Pass it as history_id"
        in (as_conversation)
    )
    assert f"it is a message id (in conversation {cid}, history {hid})" in message_as_conversation
    assert f"history {cid} not found: it is a conversation id." in as_history
    assert foreign.replace(hid, "<id>") == re.sub(r"[0-9a-f-]{36}", "<id>", never)
    assert "history id" not in foreign


async def test_one_argument_sent_under_two_of_its_names_is_refused(connect: Connect) -> None:
    async with connect() as client:
        one = await call(client, "record_run", {"model": "m", "messages": [{"role": "user", "content": "a"}]})
        two = await call(client, "record_run", {"model": "m", "messages": [{"role": "user", "content": "b"}]})
        both = await fail(
            client,
            "list_messages",
            {"conversation_id": one["conversation_id"], "conversation": two["conversation_id"]},
        )
        same = await call(
            client,
            "list_messages",
            {"conversation_id": one["conversation_id"], "limit": 5, "page_size": 5},
        )
    assert both == (
        "list_messages: `conversation` and `conversation_id` are names of one argument, `conversation_id`; "
        "send it once."
    )
    assert [m["content"] for m in same["items"]] == ["a"]
