"""search_messages and get_context through the in-memory client."""

from __future__ import annotations

from chatmemory import Principal
from tests.plugins.mcp_server.conftest import Connect, call, fail


async def test_search_finds_marks_pages_and_filters(connect: Connect) -> None:
    async with connect() as client:
        trip = await call(client, "start_conversation", {"title": "Trip"})
        run = await call(client, "start_history", {"conversation_id": trip["id"], "model": "m"})
        await call(
            client,
            "append_messages",
            {
                "history_id": run["id"],
                "messages": [
                    {"role": "user", "content": "Find a hotel in Rome"},
                    {"role": "assistant", "content": "Hotel Roma is near the station. " + "x" * 5_000},
                    {"role": "user", "content": "Something about trains"},
                ],
            },
        )
        other = await call(client, "start_conversation", {"title": "Other"})
        run2 = await call(client, "start_history", {"conversation_id": other["id"], "model": "m"})
        await call(
            client,
            "append_messages",
            {"history_id": run2["id"], "messages": [{"role": "user", "content": "hotel bill"}]},
        )

        found = await call(client, "search_messages", {"query": "hotel"})
        assert len(found["items"]) == 3
        assert all("«" in hit["snippet"] for hit in found["items"])
        assert {hit["conversation_title"] for hit in found["items"]} == {"Trip", "Other"}
        long_hit = next(h for h in found["items"] if h["message"]["role"] == "assistant")
        assert long_hit["message"]["truncated"] is True
        assert found["truncated"] is True

        first = await call(client, "search_messages", {"q": "hotel", "page_size": 2})
        rest = await call(
            client, "search_messages", {"query": "hotel", "limit": 2, "cursor": first["next_cursor"]}
        )
        ids = [h["message"]["id"] for h in first["items"] + rest["items"]]
        assert sorted(ids) == sorted(h["message"]["id"] for h in found["items"])
        assert "next_cursor" not in rest

        only_trip = await call(client, "search_messages", {"query": "hotel", "conversation": trip["id"]})
        assert {h["message"]["conversation_id"] for h in only_trip["items"]} == {trip["id"]}
        # A hit says which conversation it is in once: in its message.
        assert all("conversation_id" not in h for h in only_trip["items"])
        assistant = await call(client, "search_messages", {"query": "hotel", "role": "assistant"})
        assert [h["message"]["role"] for h in assistant["items"]] == ["assistant"]
        assert (await call(client, "search_messages", {"query": "zeppelin"}))["items"] == []


async def test_search_never_returns_other_principals_messages(connect: Connect) -> None:
    async with connect(Principal("alice")) as alice, connect(Principal("bob")) as bob:
        conv = await call(alice, "start_conversation", {})
        run = await call(alice, "start_history", {"conversation_id": conv["id"], "model": "m"})
        await call(
            alice,
            "append_messages",
            {"history_id": run["id"], "messages": [{"role": "user", "content": "password"}]},
        )
        assert (await call(bob, "search_messages", {"query": "password"}))["items"] == []
        assert "not found" in await fail(
            bob, "search_messages", {"query": "password", "conversation_id": conv["id"]}
        )
    async with connect(Principal("root", admin=True)) as root:
        assert len((await call(root, "search_messages", {"query": "password"}))["items"]) == 1


async def test_get_context_returns_the_tail_that_fits(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "m"})
        messages = [{"role": ("user", "assistant")[i % 2], "content": f"{i} " + "w" * 396} for i in range(30)]
        await call(client, "append_messages", {"history_id": run["id"], "messages": messages})

        context = await call(client, "get_context", {"conversation_id": conv["id"], "max_tokens": 1_000})
        seqs = [m["seq"] for m in context["messages"]]
        assert seqs == list(range(31 - len(seqs), 31))  # an unbroken tail, oldest first
        assert 0 < len(seqs) < 30
        assert context["omitted"] == 30 - len(seqs)
        assert context["estimated_tokens"] <= 1_000
        # Only the oldest message shown may be clipped to fill what is left of the budget.
        assert not any(m.get("truncated") for m in context["messages"][1:])

        few = await call(
            client, "get_context", {"conversation": conv["id"], "token_budget": 32_000, "last_n": 3}
        )
        assert [m["seq"] for m in few["messages"]] == [28, 29, 30]
        assert few["omitted"] == 27
        empty = await call(client, "start_conversation", {})
        nothing = await call(client, "get_context", {"conversation_id": empty["id"]})
        assert (nothing["messages"], nothing["omitted"]) == ([], 0)
