"""The API over a store opened with a lower ``list_limit`` than its page sizes (the defaults 20 and
50, or a client's ``limit``): every listing serves pages of at most ``list_limit`` with a cursor to
the rest, as it serves a client asking for more than the store's own limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from chatmemory_server import TokenFileVerifier, create_app

from chatmemory import ChatMemory, Limits, Principal
from tests.plugins._serving import loopback_socket, serving
from tests.plugins.server.conftest import ok

LIMIT = 3


async def _walk(http: httpx.AsyncClient, path: str, params: dict[str, Any]) -> list[Any]:
    """Every item of a listing, following its cursors; each page at most ``LIMIT`` items."""
    items: list[Any] = []
    cursor = None
    while True:
        page = ok(await http.get(path, params={**params, **({"cursor": cursor} if cursor else {})}))
        assert 1 <= len(page["items"]) <= LIMIT
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.parametrize("asked", [{}, {"limit": 50}], ids=["default", "more than the store's limit"])
async def test_every_listing_serves_pages_of_the_stores_list_limit(
    db_url: str, token_file: tuple[Path, dict[str, str]], asked: dict[str, int]
) -> None:
    path, tokens = token_file
    async with ChatMemory.open(db_url, limits=Limits(list_limit=LIMIT)) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation("Fruit")
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [{"role": "user", "content": f"apple {i}"} for i in range(7)])
        for i in range(6):
            await alice.start_conversation(f"other {i}")
        app = create_app(memory, verifier=TokenFileVerifier(path))
        async with serving(app, loopback_socket()) as url:
            headers = {"Authorization": f"Bearer {tokens['alice']}"}
            async with httpx.AsyncClient(base_url=url + "/v1", headers=headers, timeout=10) as http:
                conversations = await _walk(http, "/conversations", asked)
                in_conversation = await _walk(http, f"/conversations/{conv.id}/messages", asked)
                in_history = await _walk(http, f"/histories/{run.id}/messages", asked)
                hits = await _walk(http, "/search", {"q": "apple", **asked})
    assert len({c["id"] for c in conversations}) == 7
    expected = [f"apple {i}" for i in range(7)]
    assert [m["content"] for m in in_conversation] == [m["content"] for m in in_history] == expected
    assert sorted(h["message"]["content"] for h in hits) == expected
