"""The conversation resources and the prompts."""

from __future__ import annotations

import json

import pytest
from chatmemory_mcp.resources import TRANSCRIPT_MESSAGES
from mcp import MCPError

from chatmemory import Principal
from tests.plugins.mcp_server.conftest import Connect, call


def _text(result: object) -> str:
    contents = result.contents  # type: ignore[attr-defined]
    assert len(contents) == 1
    return str(contents[0].text)


async def test_templates_are_listed(connect: Connect) -> None:
    async with connect() as client:
        templates = {t.uri_template: t for t in (await client.list_resource_templates()).resource_templates}
    assert templates["chatmemory://conversations/{conversation_id}"].mime_type == "application/json"
    assert templates["chatmemory://conversations/{conversation_id}/transcript"].mime_type == "text/markdown"


async def test_conversation_resource_is_json_with_histories(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {"title": "Trip"})
        run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "gpt-4.1"})
        body = json.loads(_text(await client.read_resource(f"chatmemory://conversations/{conv['id']}")))
    assert body["conversation"]["title"] == "Trip"
    assert [h["id"] for h in body["histories"]] == [run["id"]]
    assert body["histories"][0]["model"] == "gpt-4.1"
    assert body["histories_omitted"] == 0


async def test_transcript_is_bounded_markdown(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {"title": "Long"})
        run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "m"})
        for start in (0, 100):
            batch = [
                {"role": ("user", "assistant")[i % 2], "content": f"line {i}" + "!" * 3_000 * (i == 149)}
                for i in range(start, start + 100)
            ]
            await call(client, "append_messages", {"history_id": run["id"], "messages": batch[: 150 - start]})
        markdown = _text(await client.read_resource(f"chatmemory://conversations/{conv['id']}/transcript"))
    assert markdown.startswith("# Long")
    assert f"_{150 - TRANSCRIPT_MESSAGES} older messages not shown" in markdown
    assert "line 49\n" not in markdown
    assert "line 50\n" in markdown
    assert "**assistant (m)** · #150" in markdown
    assert markdown.index("line 50") < markdown.index("line 148")
    assert "_[clipped]_" in markdown
    assert len(markdown) < 50_000


async def test_resources_of_other_principals_are_not_found(connect: Connect) -> None:
    async with connect(Principal("alice")) as alice, connect(Principal("bob")) as bob:
        conv = await call(alice, "start_conversation", {"title": "secret"})
        for uri in (
            f"chatmemory://conversations/{conv['id']}",
            f"chatmemory://conversations/{conv['id']}/transcript",
        ):
            with pytest.raises(MCPError) as caught:
                await bob.read_resource(uri)
            assert "not found" in str(caught.value)
            assert "secret" not in str(caught.value)


async def test_prompts_explain_recording_and_resuming(connect: Connect) -> None:
    async with connect() as client:
        names = {p.name for p in (await client.list_prompts()).prompts}
        assert {"record_this_run", "resume_conversation"} <= names
        record = await client.get_prompt("record_this_run", {"conversation_id": "c1", "model": "gpt-4.1"})
        resume = await client.get_prompt("resume_conversation", {"conversation_id": "c1"})
    steps = record.messages[0].content.text  # type: ignore[union-attr]
    assert steps.index("start_history") < steps.index("append_messages") < steps.index("finish_history")
    assert "'gpt-4.1'" in steps
    assert "key" in steps
    assert "get_context(conversation_id='c1')" in resume.messages[0].content.text  # type: ignore[union-attr]
