"""A store opened with a lower ``list_limit`` than the tools' page sizes (their defaults, or what a
model asks for): every listing serves pages of at most ``list_limit`` with a cursor to the rest,
never an error about an argument the model did not send."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from chatmemory_mcp import build_server
from mcp import Client
from mcp.types import TextResourceContents

from chatmemory import ChatMemory, Limits, Principal
from tests.plugins.mcp_server.conftest import call

LIMIT = 3


@asynccontextmanager
async def connected(db_url: str) -> AsyncIterator[Client]:
    async with ChatMemory.open(db_url, limits=Limits(list_limit=LIMIT)) as memory:
        server = build_server(principal=Principal("alice"), memory=memory)
        async with Client(server) as opened:  # type: ignore[arg-type]
            yield opened


async def _walk(client: Client, tool: str, arguments: dict[str, Any], key: str = "items") -> list[Any]:
    """Every item of a listing, following its cursors; each page at most ``LIMIT`` items."""
    items: list[Any] = []
    cursor = None
    while True:
        page = await call(client, tool, {**arguments, **({"cursor": cursor} if cursor else {})})
        assert 1 <= len(page[key]) <= LIMIT
        items += page[key]
        cursor = page.get("next_cursor")  # left out at the end, as every default is
        if cursor is None:
            return items


@pytest.mark.parametrize("asked", [{}, {"limit": 50}], ids=["default", "more than the store's limit"])
async def test_every_listing_serves_pages_of_the_stores_list_limit(
    db_url: str, asked: dict[str, int]
) -> None:
    async with connected(db_url) as client:
        await _listed_in_pages(client, asked)


async def _listed_in_pages(client: Client, asked: dict[str, int]) -> None:
    run = await call(
        client,
        "record_run",
        {
            "title": "Fruit",
            "model": "m",
            "messages": [{"role": "user", "content": f"apple {i}"} for i in range(7)],
        },
    )
    cid = run["conversation_id"]
    for i in range(6):
        await call(client, "start_conversation", {"title": f"other {i}"})

    conversations = await _walk(client, "list_conversations", asked)
    messages = await _walk(client, "list_messages", {"conversation_id": cid, **asked})
    hits = await _walk(client, "search_messages", {"query": "apple", **asked})

    assert len({c["id"] for c in conversations}) == 7
    assert [m["content"] for m in messages] == [f"apple {i}" for i in range(7)]
    assert sorted(h["message"]["content"] for h in hits) == [f"apple {i}" for i in range(7)]
    resource = await client.read_resource(f"chatmemory://conversations/{cid}/transcript")
    assert isinstance(resource.contents[0], TextResourceContents)
    assert "apple 6" in resource.contents[0].text
