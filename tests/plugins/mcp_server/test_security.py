"""Attacks on the HTTP server, each against a real server on a loopback socket.

DNS rebinding on any loopback bind, a refused token told apart from a missing one,
token-file entries of the wrong type, and JWT principals kept apart from token-file ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from chatmemory_mcp import HttpSettings, JWTSettings, TokenFile, TokenFileVerifier, hash_token
from chatmemory_mcp.cli import main

from chatmemory import ChatMemory, InvalidInputError, Principal
from tests.plugins.mcp_server._hosting import bind, hosting, port_of
from tests.plugins.mcp_server._issuer import issuing
from tests.plugins.mcp_server._serving import MCP_HEADERS, http_client, post_raw
from tests.plugins.mcp_server.conftest import call, fail

LIST = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_conversations"}}
).encode()


async def _post(url: str, *, token: str | None = None, **headers: str) -> httpx2.Response:
    sent = dict(MCP_HEADERS) | headers
    if token:
        sent["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(f"{url}/mcp", content=LIST, headers=sent)


async def test_a_refused_token_is_told_apart_from_a_missing_one(store: ChatMemory, tmp_path: Path) -> None:
    TokenFile(tmp_path / "tokens.json").create(Principal("alice"))
    sock = bind()
    settings = HttpSettings(port=port_of(sock), token_file=tmp_path / "tokens.json")
    async with hosting(settings, store, sock) as url:
        missing = await post_raw(url, LIST)
        refused = await post_raw(url, LIST, "cmt_not-a-token")
    assert missing.status_code == refused.status_code == 401
    assert "invalid_token" not in missing.headers["www-authenticate"]
    assert "authentication required" in missing.json()["error_description"]
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert "refused" in refused.json()["error_description"]
    assert "required" not in refused.json()["error_description"]


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "127.1.2.3"])
async def test_insecure_mode_answers_only_loopback_names(store: ChatMemory, address: str) -> None:
    sock = bind(address)
    settings = HttpSettings(host=address, port=port_of(sock), insecure_principal=Principal("solo"))
    async with hosting(settings, store, sock) as url:
        assert (await _post(url, Host="attacker.example")).status_code == 421
        assert (await _post(url, Host=f"attacker.example:{port_of(sock)}")).status_code == 421
        assert (await _post(url, Origin="http://attacker.example")).status_code == 403
        async with http_client(url, None) as client:  # the bound address itself is served
            assert (await call(client, "whoami"))["principal_id"] == "solo"
        for name in ("localhost", address, "127.0.0.1"):
            assert (await _post(url, Host=f"{name}:{port_of(sock)}")).status_code not in (403, 421)
    assert (await store.scoped(Principal("solo")).list_conversations()).items == []


async def test_token_servers_on_any_loopback_address_check_the_host(
    store: ChatMemory, tmp_path: Path
) -> None:
    token, _ = TokenFile(tmp_path / "tokens.json").create(Principal("alice"))
    sock = bind("127.0.0.2")
    settings = HttpSettings(host="127.0.0.2", port=port_of(sock), token_file=tmp_path / "tokens.json")
    async with hosting(settings, store, sock) as url:
        assert (await _post(url, token=token, Host="attacker.example")).status_code == 421
        async with http_client(url, token) as alice:
            assert (await call(alice, "whoami"))["principal_id"] == "alice"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("admin", "false"),
        ("admin", 1),
        ("admin", None),
        ("expires_at", "2099-01-01"),
        ("expires_at", 4_000_000_000.5),
        ("expires_at", True),
        ("created_at", "yesterday"),
        ("tenant", ["a", "b"]),
        ("tenant", "https://id.example.com"),
        ("principal", 7),
        ("principal", ""),
        ("id", None),
        ("label", {"x": 1}),
        ("scopes", ["chatmemory:admin"]),
    ],
)
async def test_a_malformed_entry_refuses_every_token(tmp_path: Path, field: str, value: Any) -> None:
    path = tmp_path / "tokens.json"
    store = TokenFile(path)
    alice, _ = store.create(Principal("alice"))
    bob, _ = store.create(Principal("bob"))
    data = json.loads(path.read_text())
    data["tokens"][hash_token(bob)][field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match="token_file"):
        store.load()
    verifier = TokenFileVerifier(path)
    assert await verifier.identify(alice) is None
    assert await verifier.identify(bob) is None
    assert main(["token", "list", "--token-file", str(path)]) == 2


async def test_a_string_false_never_makes_an_admin_over_http(memory: ChatMemory, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenFile(path)
    mallory, _ = store.create(Principal("mallory"))
    alice, _ = store.create(Principal("alice"))
    await memory.scoped(Principal("alice")).start_conversation(title="alice's")
    data = json.loads(path.read_text())
    data["tokens"][hash_token(mallory)]["admin"] = "false"
    path.write_text(json.dumps(data))
    sock = bind()
    async with hosting(HttpSettings(port=port_of(sock), token_file=path), memory, sock) as url:
        for token in (mallory, alice):
            response = await post_raw(url, LIST, token)
            assert response.status_code == 401
            assert "refused" in response.json()["error_description"]


async def test_jwt_principals_live_apart_from_token_file_principals(
    memory: ChatMemory, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.json"
    file_alice, _ = TokenFile(path).create(Principal("alice"))
    file_root, _ = TokenFile(path).create(Principal("root", admin=True))
    async with issuing() as issuer:
        sock = bind()
        jwt = JWTSettings(
            issuer=issuer.url,
            audience="chatmemory",
            jwks_url=f"{issuer.url}/jwks",
            admin_scope="chatmemory:admin",
        )
        settings = HttpSettings(port=port_of(sock), token_file=path, jwt=jwt)
        async with hosting(settings, memory, sock) as url:
            async with http_client(url, file_alice) as alice:
                mine = await call(alice, "start_conversation", {"title": "token-file alice"})
            jwt_alice = issuer.mint("alice", aud="chatmemory")
            jwt_admin = issuer.mint("root", aud="chatmemory", scope="chatmemory:admin")
            async with http_client(url, jwt_alice) as impostor, http_client(url, jwt_admin) as admin:
                assert (await call(impostor, "whoami"))["tenant"] == issuer.url
                assert (await call(impostor, "list_conversations"))["items"] == []
                assert "not found" in await fail(
                    impostor, "get_conversation", {"conversation_id": mine["id"]}
                )
                assert (await call(admin, "list_conversations"))["items"] == []
                assert "not found" in await fail(
                    admin, "delete_conversation", {"conversation_id": mine["id"]}
                )
            async with http_client(url, file_root) as root:  # the token file's own admin still sees it
                assert [c["id"] for c in (await call(root, "list_conversations"))["items"]] == [mine["id"]]


async def test_a_jwt_without_a_string_tenant_claim_is_refused(store: ChatMemory) -> None:
    async with issuing() as issuer:
        sock = bind()
        jwt = JWTSettings(
            issuer=issuer.url, audience="chatmemory", jwks_url=f"{issuer.url}/jwks", tenant_claim="org"
        )
        async with hosting(HttpSettings(port=port_of(sock), jwt=jwt), store, sock) as url:
            for org in (None, ["a", "b"], ["a"], 7, True, {"id": "a"}, ""):
                for token in (
                    issuer.mint("root", aud="chatmemory", org=org, scope="chatmemory:admin"),
                    issuer.mint("alice", aud="chatmemory", org=org),
                ):
                    response = await post_raw(url, LIST, token)
                    assert response.status_code == 401, org
            async with http_client(url, issuer.mint("alice", aud="chatmemory", org="acme")) as alice:
                assert (await call(alice, "whoami"))["tenant"] == f"{issuer.url}#acme"
