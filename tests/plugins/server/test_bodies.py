"""Request bodies a client (or an attacker) may send that are valid JSON text but more than the
server will take: a typed 4xx naming the body, nothing written, never a 500."""

from __future__ import annotations

from chatmemory import ChatMemory, Principal
from tests.plugins.server.conftest import Served, error, ok


async def test_a_body_nested_too_deeply_to_parse_is_an_input_error(api: Served, memory: ChatMemory) -> None:
    alice = memory.scoped(Principal("alice"))
    headers = {"Content-Type": "application/json"}
    async with api.client() as http:
        conv = ok(await http.post("/conversations", json={"title": "t"}), 201)
        run = ok(await http.post(f"/conversations/{conv['id']}/histories", json={"model": "m"}), 201)
        before = await alice.export_conversation(conv["id"])
        for depth in (5_000, 100_000):
            deep = b"[" * depth + b"]" * depth
            for method, path, body in [
                ("POST", "/conversations", b'{"metadata": {"a": ' + deep + b"}}"),
                ("PATCH", f"/conversations/{conv['id']}", b'{"metadata": {"a": ' + deep + b"}}"),
                ("POST", f"/histories/{run['id']}/messages", b'{"messages": ' + deep + b"}"),
            ]:
                response = await http.request(method, path, content=body, headers=headers)
                error(response, 422, "InvalidInputError", "body")
    assert await alice.export_conversation(conv["id"]) == before
    assert len((await alice.list_conversations()).items) == 1
