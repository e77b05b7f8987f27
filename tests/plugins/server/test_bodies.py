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


async def test_a_route_without_parameters_refuses_unknown_ones_and_acts_on_nothing(
    api: Served, memory: ChatMemory
) -> None:
    """Routes with query parameters refuse unknown ones; those without any did not, so a
    ``DELETE ...?dry_run=true`` deleted. Every route now answers an unknown parameter alike."""
    alice = memory.scoped(Principal("alice"))
    async with api.client() as http:
        conv = ok(await http.post("/conversations", json={"title": "kept"}), 201)
        run = ok(await http.post(f"/conversations/{conv['id']}/histories", json={"model": "m"}), 201)
        (pending,) = ok(
            await http.post(
                f"/histories/{run['id']}/messages",
                json={"messages": [{"role": "assistant", "content": "", "status": "pending"}]},
            ),
            201,
        )["messages"]
        before = await alice.export_conversation(conv["id"])
        for method, path, body in [
            ("DELETE", f"/conversations/{conv['id']}", None),
            ("DELETE", f"/histories/{run['id']}", None),
            ("DELETE", f"/messages/{pending['id']}", None),
            ("PATCH", f"/conversations/{conv['id']}", {"title": "renamed"}),
            ("POST", f"/messages/{pending['id']}/complete", {"content": "done"}),
            ("POST", "/conversations", {"title": "another"}),
        ]:
            response = await http.request(method, path, params={"dry_run": "true"}, json=body)
            error(response, 422, "InvalidInputError", "dry_run")
        error(
            await http.get(f"/messages/{pending['id']}", params={"dry_run": "1"}),
            422,
            "InvalidInputError",
            "dry_run",
        )
    assert await alice.export_conversation(conv["id"]) == before
    assert len((await alice.list_conversations()).items) == 1
