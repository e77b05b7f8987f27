"""Every JSON route's happy path, through a real HTTP client on a loopback socket, checked
against what the store holds."""

from __future__ import annotations

from chatmemory import ChatMemory, Principal
from tests.plugins.server.conftest import Served, ok


async def test_a_conversation_from_start_to_delete(api: Served, memory: ChatMemory) -> None:
    alice = memory.scoped(Principal("alice"))
    async with api.client() as http:
        assert ok(await http.get("/me")) == {"id": "alice", "tenant": None, "admin": False}
        conv = ok(await http.post("/conversations", json={"title": "Trip", "metadata": {"app": "t"}}), 201)
        cid = conv["id"]
        assert (await alice.get_conversation(cid)).title == "Trip"

        run = ok(
            await http.post(
                f"/conversations/{cid}/histories",
                json={"model": "gpt-4.1", "system_prompts": ["Be brief."], "metadata": {"k": 1}},
            ),
            201,
        )
        hid = run["id"]
        assert (run["model"], run["status"], run["system_prompts"]) == ("gpt-4.1", "running", ["Be brief."])
        run = ok(await http.patch(f"/histories/{hid}", json={"model": "gpt-5"}))
        assert (run["model"], run["system_prompts"]) == ("gpt-5", ["Be brief."])

        sent = [
            {"role": "user", "content": "Pack for Oslo?", "key": "u1"},
            {"role": "assistant", "content": "", "status": "pending", "key": "a1"},
        ]
        stored = ok(await http.post(f"/histories/{hid}/messages", json={"messages": sent}), 201)["messages"]
        assert [(m["seq"], m["role"], m["status"]) for m in stored] == [
            (1, "user", "complete"),
            (2, "assistant", "pending"),
        ]
        again = ok(await http.post(f"/histories/{hid}/messages", json={"messages": sent[:1]}), 201)
        assert again["messages"][0]["id"] == stored[0]["id"]  # the key made the retry harmless
        pending = stored[1]["id"]
        done = ok(await http.post(f"/messages/{pending}/complete", json={"content": "A warm coat."}))
        assert (done["status"], done["content"], done["model"]) == ("complete", "A warm coat.", "gpt-5")
        assert ok(await http.get(f"/messages/{pending}"))["content"] == "A warm coat."
        assert (await alice.get_message(pending)).status == "complete"

        third = ok(
            await http.post(
                f"/histories/{hid}/messages",
                json={"messages": [{"role": "assistant", "content": "", "status": "pending"}]},
            ),
            201,
        )["messages"][0]
        failed = ok(await http.post(f"/messages/{third['id']}/fail", json={"error": "timeout"}))
        assert (failed["status"], failed["error"]) == ("error", "timeout")

        page = ok(await http.get(f"/conversations/{cid}/messages", params={"limit": 2}))
        assert [m["seq"] for m in page["items"]] == [1, 2] and page["has_more"]
        rest = ok(await http.get(f"/conversations/{cid}/messages", params={"cursor": page["next_cursor"]}))
        assert [m["seq"] for m in rest["items"]] == [3] and rest["next_cursor"] is None
        newest = ok(await http.get(f"/histories/{hid}/messages", params={"newest_first": "true", "limit": 1}))
        assert [m["seq"] for m in newest["items"]] == [3]

        hits = ok(await http.get("/search", params={"q": "coat"}))["items"]
        assert [h["message"]["id"] for h in hits] == [pending]
        assert "«coat»" in hits[0]["snippet"]
        context = ok(await http.get(f"/conversations/{cid}/context", params={"max_tokens": 1000}))
        assert [m["seq"] for m in context["messages"]] == [1, 2]  # the failed one is not context
        exported = ok(await http.get(f"/conversations/{cid}/export"))
        assert exported["format_version"] == 1
        assert [m["seq"] for m in exported["histories"][0]["messages"]] == [1, 2, 3]

        finished = ok(await http.post(f"/histories/{hid}/finish", json={"usage": {"input_tokens": 7}}))
        assert (finished["status"], finished["usage"]) == ("completed", {"input_tokens": 7})
        history = ok(await http.get(f"/histories/{hid}", params={"messages": "true"}))
        assert len(history["messages"]) == 3
        detail = ok(await http.get(f"/conversations/{cid}", params={"messages": "true"}))
        assert detail["message_count"] == 3 and len(detail["histories"][0]["messages"]) == 3
        assert ok(await http.get(f"/conversations/{cid}"))["histories"][0]["messages"] is None

        assert ok(await http.delete(f"/messages/{third['id']}"), 204) is None
        assert ok(await http.get(f"/conversations/{cid}"))["message_count"] == 2
        assert ok(await http.delete(f"/histories/{hid}"), 204) is None
        assert ok(await http.get(f"/conversations/{cid}"))["histories"] == []
        assert ok(await http.delete(f"/conversations/{cid}"), 204) is None
        assert ok(await http.get("/conversations"))["items"] == []
    assert (await alice.list_conversations(archived=None)).items == []


async def test_listing_pages_filters_and_updates(api: Served) -> None:
    async with api.client() as http:
        ids = [ok(await http.post("/conversations", json={"title": f"c{i}"}), 201)["id"] for i in range(3)]
        run = ok(await http.post(f"/conversations/{ids[0]}/histories", json={"model": "m"}), 201)
        await http.post(
            f"/histories/{run['id']}/messages", json={"messages": [{"role": "user", "content": "hi"}]}
        )

        pinned = ok(await http.patch(f"/conversations/{ids[1]}", json={"pinned": True, "title": "Pinned"}))
        assert pinned["pinned_at"] is not None and pinned["title"] == "Pinned"
        ok(await http.patch(f"/conversations/{ids[2]}", json={"archived": True}))
        ok(await http.patch(f"/conversations/{ids[0]}", json={"metadata": {"n": 1}}))

        first = ok(await http.get("/conversations", params={"limit": 1}))
        assert [c["id"] for c in first["items"]] == [ids[1]] and first["has_more"]
        second = ok(await http.get("/conversations", params={"limit": 1, "cursor": first["next_cursor"]}))
        assert [c["id"] for c in second["items"]] == [ids[0]] and not second["has_more"]
        assert second["items"][0]["last_message_preview"] == "hi"
        assert second["items"][0]["message_count"] == 1
        archived = ok(await http.get("/conversations", params={"archived": "true"}))["items"]
        assert [c["id"] for c in archived] == [ids[2]]
        assert len(ok(await http.get("/conversations", params={"archived": "all"}))["items"]) == 3

        cleared = ok(await http.patch(f"/conversations/{ids[1]}", json={"title": None}))
        assert cleared["title"] is None and cleared["pinned_at"] is not None  # only what was sent changed
