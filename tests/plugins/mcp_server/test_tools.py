"""Every tool through the in-memory client, in both protocol modes, on both backends."""

from __future__ import annotations

from chatmemory_mcp.history_tools import RESPONSE_CHARS

from chatmemory import ChatMemory, Principal
from tests.plugins.mcp_server.conftest import Connect, call, fail

TOOLS = {
    "whoami",
    "start_conversation",
    "list_conversations",
    "get_conversation",
    "update_conversation",
    "delete_conversation",
    "start_history",
    "finish_history",
    "append_messages",
    "list_messages",
    "search_messages",
    "get_context",
    "record_run",
    "delete_message",
    "delete_history",
    "export_conversation",
}
READ_ONLY = {
    "whoami",
    "list_conversations",
    "get_conversation",
    "list_messages",
    "search_messages",
    "get_context",
    "export_conversation",
}


async def test_every_tool_has_an_output_schema_and_annotations(connect: Connect) -> None:
    async with connect() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for name, tool in tools.items():
        assert tool.output_schema is not None, name
        assert tool.annotations is not None, name
        assert bool(tool.annotations.read_only_hint) is (name in READ_ONLY), name
        assert tool.description, name
    # Unset hints take the specification's defaults: destructive unless said otherwise.
    assert tools["delete_conversation"].annotations.destructive_hint in (True, None)  # type: ignore[union-attr]
    assert tools["append_messages"].annotations.destructive_hint is False  # type: ignore[union-attr]
    assert "page_size" not in tools["list_messages"].input_schema["properties"]


async def test_whoami_reports_the_fixed_principal_and_the_client(connect: Connect) -> None:
    async with connect(Principal("carol", tenant="acme", admin=True), client="desk") as client:
        me = await call(client, "whoami")
    assert me == {
        "principal_id": "carol",
        "tenant": "acme",
        "admin": True,
        "auth": "stdio",
        "client": {"name": "desk", "version": "1.0"},
    }


async def test_conversation_lifecycle(connect: Connect) -> None:
    async with connect() as client:
        first = await call(client, "start_conversation", {"title": "Trip", "metadata": {"app": "demo"}})
        assert first["owner_id"] == "alice"
        assert first["metadata"] == {"app": "demo"}
        second = await call(client, "start_conversation", {})
        assert "title" not in second

        page = await call(client, "list_conversations", {"limit": 1})
        assert [c["id"] for c in page["items"]] == [second["id"]]
        assert page["has_more"] is True
        rest = await call(client, "list_conversations", {"limit": 1, "cursor": page["next_cursor"]})
        assert [c["id"] for c in rest["items"]] == [first["id"]]
        assert "next_cursor" not in rest

        updated = await call(
            client,
            "update_conversation",
            {"conversation_id": first["id"], "title": "Trip to Rome", "pinned": True, "metadata": {"v": 2}},
        )
        assert (updated["title"], updated["pinned"], updated["metadata"]) == ("Trip to Rome", True, {"v": 2})
        cleared = await call(client, "update_conversation", {"conversation_id": first["id"], "title": ""})
        assert "title" not in cleared
        assert cleared["pinned"] is True  # omitted fields stay

        await call(client, "update_conversation", {"conversation_id": second["id"], "archived": True})
        listed = await call(client, "list_conversations", {})
        assert [c["id"] for c in listed["items"]] == [first["id"]]
        archived = await call(client, "list_conversations", {"archived": True})
        assert [c["id"] for c in archived["items"]] == [second["id"]]
        both = await call(client, "list_conversations", {"archived": None})
        assert len(both["items"]) == 2

        detail = await call(client, "get_conversation", {"conversation_id": first["id"]})
        assert detail["conversation"]["id"] == first["id"]
        assert detail["histories"] == []

        assert await call(client, "delete_conversation", {"conversation_id": first["id"]}) == {
            "id": first["id"],
            "deleted": True,
        }
        gone = await fail(client, "get_conversation", {"conversation_id": first["id"]})
        assert f"conversation {first['id']} not found" in gone
        assert "list_conversations" in gone


async def test_record_a_run_with_provenance_and_idempotent_keys(connect: Connect) -> None:
    async with connect(client="claude-desktop") as client:
        conv = await call(client, "start_conversation", {"title": "Run"})
        run = await call(
            client,
            "start_history",
            {
                "conversation_id": conv["id"],
                "model": "claude-sonnet-4-5",
                "agent": "researcher",
                "system_prompts": ["Be brief."],
                "metadata": {"task": "t1", "mcp_client": "forged"},
            },
        )
        assert run["status"] == "running"
        assert run["model"] == "claude-sonnet-4-5"
        assert run["system_prompts"] == ["Be brief."]
        assert run["metadata"] == {
            "task": "t1",
            "agent": "researcher",
            "mcp_client": {"name": "claude-desktop", "version": "1.0"},
        }

        batch = [
            {"role": "user", "content": "Plan a trip", "key": "u1"},
            {"role": "assistant", "content": [{"type": "text", "text": "Sure."}], "key": "a1"},
        ]
        appended = await call(client, "append_messages", {"history_id": run["id"], "messages": batch})
        assert appended["conversation_id"] == conv["id"]
        assert [(m["seq"], m["role"], m["key"]) for m in appended["messages"]] == [
            (1, "user", "u1"),
            (2, "assistant", "a1"),
        ]

        # A retry of the same batch plus one new message stores only the new one.
        retry = [*batch, {"role": "user", "content": "Thanks", "key": "u2"}]
        again = await call(client, "append_messages", {"history_id": run["id"], "messages": retry})
        assert [m["seq"] for m in again["messages"]] == [1, 2, 3]
        assert [m["id"] for m in again["messages"][:2]] == [m["id"] for m in appended["messages"]]

        listed = await call(client, "list_messages", {"history_id": run["id"]})
        assert [m["content"] for m in listed["items"]] == ["Plan a trip", "Sure.", "Thanks"]
        assert listed["items"][1]["model"] == "claude-sonnet-4-5"
        assert "part_types" not in listed["items"][1]  # text parts read as plain content

        done = await call(
            client,
            "finish_history",
            {"history_id": run["id"], "status": "completed", "usage": {"input_tokens": 12}},
        )
        assert (done["status"], done["usage"]) == ("completed", {"input_tokens": 12})
        assert done["finished_at"] is not None

        closed = await fail(
            client, "append_messages", {"history_id": run["id"], "messages": [batch[0] | {"key": "x"}]}
        )
        assert "start_history" in closed
        twice = await call(client, "finish_history", {"history_id": run["id"]})
        assert twice == done  # a retry returns the run unchanged
        other = await fail(client, "finish_history", {"history_id": run["id"], "status": "failed"})
        # Worded as every tool error is: the tool's name, then what to do.
        assert other == (
            f"finish_history: history {run['id']} is already completed; it cannot become failed. "
            "Call start_history to record a new run."
        )
        assert closed.startswith("append_messages: ")

        detail = await call(client, "get_conversation", {"conversation_id": conv["id"]})
        assert [h["id"] for h in detail["histories"]] == [run["id"]]
        assert detail["conversation"]["message_count"] == 3


async def test_list_messages_pages_and_reads_the_tail(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "m"})
        messages = [{"role": "user", "content": f"m{i}"} for i in range(5)]
        await call(client, "append_messages", {"history_id": run["id"], "messages": messages})
        seen: list[str] = []
        cursor = None
        while True:
            page = await call(
                client, "list_messages", {"conversation_id": conv["id"], "limit": 2, "cursor": cursor}
            )
            seen += [m["content"] for m in page["items"]]
            cursor = page.get("next_cursor")
            if cursor is None:
                break
        assert seen == [f"m{i}" for i in range(5)]
        tail = await call(
            client, "list_messages", {"conversation_id": conv["id"], "limit": 2, "newest_first": True}
        )
        assert [m["content"] for m in tail["items"]] == ["m4", "m3"]


async def test_get_conversation_pages_its_histories(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        runs = [
            await call(client, "start_history", {"conversation_id": conv["id"], "model": f"m{i}"})
            for i in range(3)
        ]
        first = await call(client, "get_conversation", {"conversation_id": conv["id"], "limit": 2})
        assert [h["id"] for h in first["histories"]] == [r["id"] for r in runs[:2]]
        assert first["has_more"] is True
        rest = await call(
            client,
            "get_conversation",
            {"conversation_id": conv["id"], "limit": 2, "cursor": first["next_cursor"]},
        )
        assert [h["id"] for h in rest["histories"]] == [runs[2]["id"]]
        assert "next_cursor" not in rest


async def test_long_content_is_clipped_and_flagged(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        run = await call(client, "start_history", {"conversation_id": conv["id"], "model": "m"})
        await call(
            client,
            "append_messages",
            {"history_id": run["id"], "messages": [{"role": "user", "content": "x" * 5_000}] * 100},
        )
        one = await call(
            client, "list_messages", {"conversation_id": conv["id"], "limit": 1, "max_chars": 300}
        )
        item = one["items"][0]
        assert (len(item["content"]), item["content_length"], item["truncated"]) == (301, 5_000, True)
        assert one["truncated"] is True

        # A full page with the largest per-message allowance still fits the response budget.
        full = await call(
            client, "list_messages", {"conversation_id": conv["id"], "limit": 100, "max_chars": 20_000}
        )
        assert len(full["items"]) == 100
        assert sum(len(m["content"]) for m in full["items"]) <= RESPONSE_CHARS + 100
        assert all(m["truncated"] for m in full["items"])


async def test_model_guessed_parameter_names_are_accepted(connect: Connect) -> None:
    async with connect() as client:
        conv = await call(client, "start_conversation", {})
        run = await call(
            client, "start_history", {"conversation": conv["id"], "model_name": "m", "agent_name": "a"}
        )
        assert run["metadata"]["agent"] == "a"
        msgs = [
            {"role": "user", "text": "one", "idempotency_key": "k1"},
            {"role": "user", "content": "two", "client_message_id": "k2"},
        ]
        stored = await call(client, "append_messages", {"history": run["id"], "messages": msgs})
        assert [m["key"] for m in stored["messages"]] == ["k1", "k2"]
        page = await call(client, "list_messages", {"conversationId": conv["id"], "page_size": 1})
        assert [m["content"] for m in page["items"]] == ["one"]
        nxt = await call(
            client,
            "list_messages",
            {"conversation": conv["id"], "per_page": 1, "page_token": page["next_cursor"]},
        )
        assert [m["content"] for m in nxt["items"]] == ["two"]
        listed = await call(client, "list_conversations", {"max_results": 1})
        assert len(listed["items"]) == 1


async def test_principals_see_only_their_own_and_admin_sees_all(memory: ChatMemory, connect: Connect) -> None:
    async with connect(Principal("alice")) as alice, connect(Principal("bob")) as bob:
        conv = await call(alice, "start_conversation", {"title": "secret"})
        run = await call(alice, "start_history", {"conversation_id": conv["id"], "model": "m"})
        await call(
            alice,
            "append_messages",
            {"history_id": run["id"], "messages": [{"role": "user", "content": "x"}]},
        )

        assert (await call(bob, "list_conversations"))["items"] == []
        missing = "01a20ae9-0000-7000-8000-000000000000"
        foreign = await fail(bob, "get_conversation", {"conversation_id": conv["id"]})
        absent = await fail(bob, "get_conversation", {"conversation_id": missing})
        assert foreign.replace(conv["id"], missing) == absent
        assert "alice" not in foreign
        assert "secret" not in foreign
        for tool, args in [
            ("list_messages", {"conversation_id": conv["id"]}),
            ("list_messages", {"history_id": run["id"]}),
            ("start_history", {"conversation_id": conv["id"], "model": "m"}),
            ("append_messages", {"history_id": run["id"], "messages": [{"role": "user", "content": "y"}]}),
            ("finish_history", {"history_id": run["id"]}),
            ("update_conversation", {"conversation_id": conv["id"], "title": "mine"}),
            ("delete_conversation", {"conversation_id": conv["id"]}),
        ]:
            assert "not found" in await fail(bob, tool, args), tool

    async with connect(Principal("root", admin=True)) as root:
        seen = await call(root, "list_conversations")
        assert [c["owner_id"] for c in seen["items"]] == ["alice"]
        page = await call(root, "list_messages", {"conversation_id": conv["id"]})
        assert [m["content"] for m in page["items"]] == ["x"]
    assert (await memory.scoped(Principal("alice")).get_conversation(conv["id"])).title == "secret"
