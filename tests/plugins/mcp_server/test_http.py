"""Streamable HTTP on a real loopback socket, with token-file authentication."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from chatmemory_mcp import ConfigError, HttpSettings, TokenFile, build_http_app, hash_token

from chatmemory import ChatMemory, Principal
from tests.plugins.mcp_server._serving import http_client, loopback_socket, post_raw, serving
from tests.plugins.mcp_server.conftest import call, fail

MAX_BODY = 64 * 1024
CALL_START = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "start_conversation", "arguments": {}},
    }
).encode()


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    store = TokenFile(tmp_path / "tokens.json")
    return {
        "alice": store.create(Principal("alice"))[0],
        "bob": store.create(Principal("bob"), label="laptop")[0],
        "admin": store.create(Principal("root", admin=True))[0],
    }


@asynccontextmanager
async def served(memory: ChatMemory, tmp_path: Path) -> AsyncIterator[str]:
    sock = loopback_socket()
    settings = HttpSettings(
        host="127.0.0.1",
        port=sock.getsockname()[1],
        token_file=tmp_path / "tokens.json",
        max_body_bytes=MAX_BODY,
    )
    async with serving(build_http_app(settings, memory=memory), sock) as url:
        yield url


async def test_no_or_bad_token_is_401_before_any_tool(
    memory: ChatMemory, tmp_path: Path, tokens: dict[str, str]
) -> None:
    async with served(memory, tmp_path) as url:
        for token in (None, "cmt_wrong", tokens["alice"] + "x", "", "a" * 10_000):
            response = await post_raw(url, CALL_START, token)
            assert response.status_code == 401, token
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await memory.scoped(Principal("root", admin=True)).list_conversations()).items == []


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_each_token_reaches_only_its_principals_data(
    memory: ChatMemory, tmp_path: Path, tokens: dict[str, str], mode: str
) -> None:
    async with (
        served(memory, tmp_path) as url,
        http_client(url, tokens["alice"], mode) as alice,
        http_client(url, tokens["bob"], mode) as bob,
        http_client(url, tokens["admin"], mode) as admin,
    ):
        me = await call(alice, "whoami")
        assert me == {
            "principal_id": "alice",
            "auth": "token",
            "client": {"name": "http-test", "version": "2.0"},
        }
        conv = await call(alice, "start_conversation", {"title": "alice only"})
        run = await call(alice, "start_history", {"conversation_id": conv["id"], "model": "m"})
        assert run["metadata"]["mcp_client"] == {"name": "http-test", "version": "2.0"}
        await call(
            alice,
            "append_messages",
            {"history_id": run["id"], "messages": [{"role": "user", "content": "hi"}]},
        )

        assert (await call(bob, "list_conversations"))["items"] == []
        for tool, args in [
            ("get_conversation", {"conversation_id": conv["id"]}),
            ("list_messages", {"history_id": run["id"]}),
            ("append_messages", {"history_id": run["id"], "messages": [{"role": "user", "content": "x"}]}),
            ("delete_conversation", {"conversation_id": conv["id"]}),
        ]:
            message = await fail(bob, tool, args)
            assert "not found" in message
            assert "alice" not in message
        assert (await call(bob, "search_messages", {"query": "hi"}))["items"] == []

        assert (await call(admin, "whoami"))["admin"] is True
        listed = await call(admin, "list_conversations")
        assert [(c["id"], c["owner_id"]) for c in listed["items"]] == [(conv["id"], "alice")]
        page = await call(admin, "list_messages", {"conversation_id": conv["id"]})
        assert [m["content"] for m in page["items"]] == ["hi"]
        body = await admin.read_resource(f"chatmemory://conversations/{conv['id']}")
        assert "alice only" in body.contents[0].text  # type: ignore[union-attr]


async def test_a_revoked_token_is_refused(memory: ChatMemory, tmp_path: Path, tokens: dict[str, str]) -> None:
    store = TokenFile(tmp_path / "tokens.json")
    bob_id = next(e.id for e in store.load().values() if e.principal == "bob")
    async with served(memory, tmp_path) as url:
        async with http_client(url, tokens["bob"]) as bob:
            await call(bob, "whoami")
        assert store.revoke(bob_id) is not None
        assert (await post_raw(url, CALL_START, tokens["bob"])).status_code == 401
        async with http_client(url, tokens["alice"]) as alice:  # the others still work
            assert (await call(alice, "whoami"))["principal_id"] == "alice"


async def test_an_expired_token_is_refused(
    memory: ChatMemory, tmp_path: Path, tokens: dict[str, str]
) -> None:
    path = tmp_path / "tokens.json"
    expiring, entry = TokenFile(path).create(Principal("carol"), expires_in=3_600)
    data = json.loads(path.read_text())
    data["tokens"][hash_token(expiring)]["expires_at"] = entry.created_at - 1
    path.write_text(json.dumps(data))
    async with served(memory, tmp_path) as url:
        assert (await post_raw(url, CALL_START, expiring)).status_code == 401


async def test_an_oversized_body_is_refused_cleanly(
    memory: ChatMemory, tmp_path: Path, tokens: dict[str, str]
) -> None:
    big = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "start_conversation", "arguments": {"metadata": {"blob": "x" * MAX_BODY}}},
        }
    ).encode()
    async with served(memory, tmp_path) as url:
        response = await post_raw(url, big, tokens["alice"])
        assert response.status_code == 413
        async with http_client(url, tokens["alice"]) as alice:  # the server is fine afterwards
            assert (await call(alice, "list_conversations"))["items"] == []


async def test_it_refuses_to_start_without_authentication(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without authentication"):
        build_http_app(HttpSettings(token_file=tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="loopback"):
        build_http_app(HttpSettings(host="0.0.0.0", insecure_principal=Principal("solo")))
    TokenFile(tmp_path / "tokens.json").create(Principal("alice"))
    with pytest.raises(ConfigError, match="cannot be combined"):
        build_http_app(
            HttpSettings(token_file=tmp_path / "tokens.json", insecure_principal=Principal("solo"))
        )


async def test_insecure_mode_serves_one_fixed_principal_on_loopback(memory: ChatMemory) -> None:
    sock = loopback_socket()
    settings = HttpSettings(
        host="127.0.0.1", port=sock.getsockname()[1], insecure_principal=Principal("solo")
    )
    async with (
        serving(build_http_app(settings, memory=memory), sock) as url,
        http_client(url, None) as client,
    ):
        me = await call(client, "whoami")
    assert (me["principal_id"], me["auth"]) == ("solo", "insecure")
