"""JSON values nested as deeply as the store takes (128 levels) go through the API both ways."""

from __future__ import annotations

from typing import Any

from tests.plugins.server.conftest import Served, ok


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


async def test_values_nested_128_levels(api: Served) -> None:
    async with api.client() as http:
        conv = ok(await http.post("/conversations", json={"metadata": _deep(128)}), 201)
        cid = conv["id"]
        run = ok(
            await http.post(f"/conversations/{cid}/histories", json={"model": "m", "metadata": _deep(128)}),
            201,
        )
        message = {
            "role": "user",
            "content": "deep",
            "metadata": _deep(128),
            "usage": _deep(128),
            "native": {"format": "f", "data": _deep(128)},
        }
        stored = ok(await http.post(f"/histories/{run['id']}/messages", json={"messages": [message]}), 201)
        assert stored["messages"][0]["metadata"] == _deep(128)
        detail = ok(await http.get(f"/conversations/{cid}"))
        assert detail["conversation"]["metadata"] == _deep(128) if "conversation" in detail else True
        history = ok(await http.get(f"/histories/{run['id']}", params={"messages": "true"}))
        assert history["messages"][0]["native"]["data"] == _deep(128)
        page = ok(await http.get(f"/conversations/{cid}/messages"))
        assert page["items"][0]["native"]["data"] == _deep(128)
        exported = ok(await http.get(f"/conversations/{cid}/export"))
        assert exported["histories"][0]["messages"][0]["native"]["data"] == _deep(128)
        found = ok(await http.get("/search", params={"q": "deep"}))
        assert found["items"][0]["message"]["native"]["data"] == _deep(128)
        ok(await http.get(f"/conversations/{cid}/context"))
        ok(await http.get("/conversations"))
