"""What the API refuses: no or bad token (401), someone else's ids (404, exactly like a missing
id, on every id-taking route), bad input (a typed 4xx naming the field, nothing written),
conflicts (409) and oversized bodies (413)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from chatmemory_server.routes import api as declared

from chatmemory import ChatMemory, Principal
from tests.plugins.server.conftest import MAX_BODY, Served, error, ok

# A valid body for each route that takes one: the refusals below are about ids and tokens only.
BODIES: dict[str, dict[str, Any]] = {
    "start_conversation": {"title": "x"},
    "update_conversation": {"title": "taken"},
    "start_history": {"model": "m"},
    "update_history": {"model": "other"},
    "finish_history": {},
    "append_messages": {"messages": [{"role": "user", "content": "sneaky"}]},
    "complete_message": {"content": "sneaky"},
    "fail_message": {"error": "sneaky"},
}
IDS = re.compile(r"{(\w+)}")


async def _seed(http: httpx.AsyncClient) -> dict[str, str]:
    """Alice's conversation, running history and pending message."""
    cid = ok(await http.post("/conversations", json={"title": "Mine"}), 201)["id"]
    hid = ok(await http.post(f"/conversations/{cid}/histories", json={"model": "m"}), 201)["id"]
    pending = {"role": "assistant", "content": "", "status": "pending"}
    mid = ok(await http.post(f"/histories/{hid}/messages", json={"messages": [pending]}), 201)
    return {"conversation_id": cid, "history_id": hid, "message_id": mid["messages"][0]["id"]}


async def _call(http: httpx.AsyncClient, method: str, path: str, name: str) -> httpx.Response:
    body = BODIES[name] if method in {"POST", "PATCH"} else None
    return await http.request(method, path, json=body)


async def test_someone_elses_ids_are_404_like_missing_ones_on_every_route(
    api: Served, memory: ChatMemory
) -> None:
    async with api.client("alice") as alice_http, api.client("bob") as bob_http:
        ids = await _seed(alice_http)
        before = await memory.scoped(Principal("alice")).export_conversation(ids["conversation_id"])
        routes = [(e.method, e.path, e.name) for e in declared.endpoints if IDS.search(e.path)]
        routes.append(("GET", "/conversations/{conversation_id}/events", "watch"))
        assert len(routes) >= 17
        for method, template, name in routes:
            path = template.format(**ids)
            missing = template.format(**{k: str(uuid.uuid4()) for k in ids})
            theirs = await _call(bob_http, method, path, name)
            absent = await _call(bob_http, method, missing, name)
            assert theirs.status_code == absent.status_code == 404, (name, theirs.text)
            mine, gone = theirs.json()["error"], absent.json()["error"]
            assert mine["type"] == gone["type"] and mine["type"].endswith("NotFound"), name
            assert mine["message"].replace(path.split("/")[2], "ID") == gone["message"].replace(
                missing.split("/")[2], "ID"
            ), name
    after = await memory.scoped(Principal("alice")).export_conversation(ids["conversation_id"])
    assert after == before
    assert (await memory.scoped(Principal("bob")).list_conversations(archived=None)).items == []


async def test_no_token_or_a_refused_one_is_401_and_nothing_is_written(
    api: Served, memory: ChatMemory
) -> None:
    cases: list[tuple[str | None, dict[str, str]]] = [
        (None, {}),
        ("cmt_unknown", {}),
        (api.tokens["alice"] + "x", {}),
        (None, {"Authorization": "Basic YWxpY2U6eA=="}),
        (None, {"Authorization": "Bearer " + "a" * 10_000}),
    ]
    for who, headers in cases:
        async with api.client(who, **headers) as http:
            for method, path in [("POST", "/conversations"), ("GET", "/conversations"), ("GET", "/events")]:
                response = await http.request(method, path, json={} if method == "POST" else None)
                assert response.status_code == 401, (who, headers, path)
                challenge = response.headers["www-authenticate"]
                assert challenge.startswith("Bearer")
                presented = who is not None or headers.get("Authorization", "").startswith("Bearer")
                kind = "InvalidToken" if presented else "AuthenticationRequired"
                assert response.json()["error"]["type"] == kind
                assert ('error="invalid_token"' in challenge) == presented
    assert (await memory.scoped(Principal("root", admin=True)).list_conversations(archived=None)).items == []
    async with api.client(None) as http:
        assert ok(await http.get(api.url + "/openapi.json"))["openapi"].startswith("3.1")


async def test_bad_input_names_the_field_and_writes_nothing(api: Served, memory: ChatMemory) -> None:
    alice = memory.scoped(Principal("alice"))
    async with api.client() as http:
        ids = await _seed(http)
        cid, hid, mid = ids["conversation_id"], ids["history_id"], ids["message_id"]
        before = await alice.export_conversation(cid)
        good = {"role": "user", "content": "fine"}
        bad_bodies: list[tuple[str, str, Any, int, str, str | None]] = [
            (
                "POST",
                f"/histories/{hid}/messages",
                {"messages": [good, {"role": "bob", "content": "x"}]},
                422,
                "InvalidInputError",
                "messages.1.role",
            ),
            (
                "POST",
                f"/histories/{hid}/messages",
                {"messages": [{"role": "user", "content": "x", "model": "m"}]},
                422,
                "InvalidInputError",
                "messages.0.model",
            ),
            (
                "POST",
                f"/histories/{hid}/messages",
                {"messages": [good], "extra": 1},
                422,
                "InvalidInputError",
                "extra",
            ),
            ("POST", f"/histories/{hid}/messages", {"messages": []}, 422, "InvalidInputError", "messages"),
            (
                "POST",
                f"/histories/{hid}/messages",
                {"messages": [{"role": "user", "content": "x" * 100_001}]},
                422,
                "InvalidInputError",
                "messages.0.content",
            ),
            (
                "POST",
                f"/histories/{hid}/messages",
                {"messages": [good, {**good, "key": "k"}, {**good, "key": "k"}]},
                422,
                "InvalidInputError",
                "messages",
            ),
            ("PATCH", f"/conversations/{cid}", {"title": 5}, 422, "InvalidInputError", "title"),
            ("PATCH", f"/conversations/{cid}", {"pinned": "yes"}, 422, "InvalidInputError", "pinned"),
            ("PATCH", f"/conversations/{cid}", {"title": "t" * 201}, 422, "InvalidInputError", "title"),
            ("PATCH", f"/conversations/{cid}", {"metadata": [1]}, 422, "InvalidInputError", "metadata"),
            ("PATCH", f"/conversations/{cid}", {"colour": "red"}, 422, "InvalidInputError", "colour"),
            ("POST", f"/conversations/{cid}/histories", {"model": ""}, 422, "InvalidInputError", "model"),
            (
                "POST",
                f"/conversations/{cid}/histories",
                {"model": "m", "system_prompts": ["a", 5]},
                422,
                "InvalidInputError",
                "system_prompts.1",
            ),
            (
                "POST",
                f"/messages/{mid}/complete",
                {"content": [{"type": "text", "text": 5}]},
                422,
                "InvalidInputError",
                "content.0.text",
            ),
            ("POST", f"/messages/{mid}/complete", {}, 422, "InvalidInputError", "content"),
            ("POST", f"/messages/{mid}/fail", {"error": None}, 422, "InvalidInputError", "error"),
            ("POST", f"/histories/{hid}/finish", {"status": "done"}, 422, "InvalidInputError", "status"),
            ("POST", f"/histories/{hid}/finish", [1], 422, "InvalidInputError", "body"),
            (
                "PATCH",
                "/conversations/not-a-uuid",
                {"title": "x"},
                422,
                "InvalidInputError",
                "conversation_id",
            ),
        ]
        for method, path, body, status, kind, field in bad_bodies:
            error(await http.request(method, path, json=body), status, kind, field)
        error(
            await http.post(f"/histories/{hid}/messages", content=b'{"messages": [', headers=_JSON),
            400,
            "MalformedRequest",
            "body",
        )
        error(
            await http.post(f"/histories/{hid}/messages", content=b"\xff\xfe", headers=_JSON),
            400,
            "MalformedRequest",
            "body",
        )
        huge = {"messages": [{"role": "user", "content": "x" * MAX_BODY}]}
        error(await http.post(f"/histories/{hid}/messages", json=huge), 413, "RequestTooLarge", "body")
        for params, field in [
            ({"limit": "abc"}, "limit"),
            ({"limit": "0"}, "limit"),
            ({"newest_first": "maybe"}, "newest_first"),
            ({"colour": "red"}, "colour"),
            ({"cursor": "garbage"}, "cursor"),
        ]:
            error(
                await http.get(f"/conversations/{cid}/messages", params=params),
                422,
                "InvalidInputError",
                field,
            )
        error(await http.get("/search", params={"q": "x", "role": "bob"}), 422, "InvalidInputError", "role")
        error(await http.get("/search"), 422, "InvalidInputError", "q")
        error(
            await http.get(f"/conversations/{cid}/context", params={"max_tokens": "0"}),
            422,
            "InvalidInputError",
            "max_tokens",
        )
        error(await http.get("/nowhere"), 404, "RouteNotFound")
        error(await http.put(f"/conversations/{cid}", json={}), 405, "MethodNotAllowed")
        assert await alice.export_conversation(cid) == before
        assert len((await alice.list_conversations()).items) == 1


async def test_state_conflicts_are_409(api: Served, memory: ChatMemory) -> None:
    async with api.client() as http:
        ids = await _seed(http)
        hid, mid = ids["history_id"], ids["message_id"]
        ok(await http.post(f"/messages/{mid}/fail", json={"error": "gave up"}))
        error(await http.post(f"/messages/{mid}/complete", json={"content": "late"}), 409, "ConflictError")
        ok(await http.post(f"/histories/{hid}/finish", json={}))
        late = {"messages": [{"role": "user", "content": "late"}]}
        error(await http.post(f"/histories/{hid}/messages", json=late), 409, "ConflictError")
        error(await http.patch(f"/histories/{hid}", json={"model": "x"}), 409, "ConflictError")
    messages = await memory.scoped(Principal("alice")).transcript(ids["conversation_id"])
    assert [(m.status, m.error) for m in messages] == [("error", "gave up")]


_JSON = {"Content-Type": "application/json"}
