"""The HTTP server as an OAuth 2.1 protected resource, as hosted MCP clients find and use it.

A local authorization server (keys generated here, JWKS on a loopback socket) mints the
tokens. The client walks the discovery chain of the MCP authorization spec: ``401`` →
``WWW-Authenticate: Bearer resource_metadata=…`` → protected-resource metadata (RFC 9728)
→ authorization-server metadata (RFC 8414) → a token for this resource (RFC 8707).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
from chatmemory_mcp import HttpSettings, JWTSettings, TokenFile
from cryptography.hazmat.primitives.asymmetric import ec

from chatmemory import ChatMemory, Principal
from tests.plugins.mcp_server._hosting import bind, hosting, port_of
from tests.plugins.mcp_server._issuer import Issuer, issuing
from tests.plugins.mcp_server._serving import http_client, post_raw
from tests.plugins.mcp_server.conftest import call

PING = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami"}}'


@asynccontextmanager
async def protected(
    memory: ChatMemory, token_file: Path | None = None
) -> AsyncIterator[tuple[Issuer, str, str]]:
    """An issuer and a server trusting it; yields the issuer, the server's base URL and its resource URL."""
    async with issuing() as issuer:
        sock = bind()
        resource = f"http://127.0.0.1:{port_of(sock)}/mcp"
        settings = HttpSettings(
            port=port_of(sock),
            resource_url=resource,
            token_file=token_file,
            oauth_scopes=["chatmemory"],
            jwt=JWTSettings(issuer=issuer.url, audience=resource, jwks_url=f"{issuer.url}/jwks"),
        )
        async with hosting(settings, memory, sock) as url:
            yield issuer, url, resource


async def test_a_client_discovers_the_issuer_and_gets_in(memory: ChatMemory) -> None:
    async with protected(memory) as (issuer, url, resource), httpx2.AsyncClient(timeout=30) as http:
        refused = await post_raw(url, PING)
        assert refused.status_code == 401
        challenge = refused.headers["www-authenticate"]
        found = re.search(r'resource_metadata="([^"]+)"', challenge)
        assert found is not None
        assert found.group(1) == f"{url}/.well-known/oauth-protected-resource/mcp"
        assert 'scope="chatmemory"' in challenge

        document = (await http.get(found.group(1))).json()
        assert document["resource"] == resource
        assert document["authorization_servers"] == [issuer.url]
        assert document["bearer_methods_supported"] == ["header"]
        assert document["scopes_supported"] == ["chatmemory"]
        bare = await http.get(f"{url}/.well-known/oauth-protected-resource")
        assert bare.json() == document
        assert bare.headers["access-control-allow-origin"] == "*"

        server = document["authorization_servers"][0]
        metadata = (await http.get(f"{server}/.well-known/oauth-authorization-server")).json()
        form = {"grant_type": "client_credentials", "client_id": "claude", "resource": resource}
        granted = (await http.post(metadata["token_endpoint"], data=form)).json()

        async with http_client(url, granted["access_token"]) as client:
            me = await call(client, "whoami")
            conversation = await call(client, "start_conversation", {"title": "from a hosted client"})
    assert (me["principal_id"], me["tenant"], me["auth"]) == ("claude", issuer.url, "jwt")
    owner = Principal("claude", tenant=issuer.url)
    assert (await memory.scoped(owner).get_conversation(conversation["id"])).title == "from a hosted client"


async def test_tokens_are_bound_to_this_resource_and_issuer(store: ChatMemory) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    async with protected(store) as (issuer, url, resource):
        for token in (
            issuer.mint("alice", aud="http://127.0.0.1:1/mcp"),  # minted for another resource
            issuer.mint("alice", aud=[f"{resource}/other"]),
            issuer.mint("alice", aud=None),
            issuer.mint("alice", aud=resource, key=stranger),  # not a key of the issuer's JWKS
            issuer.mint("alice", aud=resource, iss="https://elsewhere.example"),
            issuer.mint("alice", aud=resource, exp=1),
        ):
            response = await post_raw(url, PING, token)
            assert response.status_code == 401
            assert 'error="invalid_token"' in response.headers["www-authenticate"]
            assert "resource_metadata=" in response.headers["www-authenticate"]
        async with http_client(url, issuer.mint("alice", aud=[resource, "https://other.example"])) as alice:
            assert (await call(alice, "whoami"))["principal_id"] == "alice"


async def test_without_an_authorization_server_no_metadata_is_published(
    store: ChatMemory, tmp_path: Path
) -> None:
    TokenFile(tmp_path / "tokens.json").create(Principal("alice"))
    sock = bind()
    settings = HttpSettings(port=port_of(sock), token_file=tmp_path / "tokens.json")
    async with hosting(settings, store, sock) as url, httpx2.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{url}/.well-known/oauth-protected-resource")).status_code == 404
        assert "resource_metadata" not in (await post_raw(url, PING)).headers["www-authenticate"]


async def test_token_file_and_oauth_side_by_side(store: ChatMemory, tmp_path: Path) -> None:
    token, _ = TokenFile(tmp_path / "tokens.json").create(Principal("ops", admin=True))
    async with (
        protected(store, tmp_path / "tokens.json") as (issuer, url, resource),
        http_client(url, token) as ops,
        http_client(url, issuer.mint("alice", aud=resource)) as alice,
    ):
        assert (await call(ops, "whoami"))["auth"] == "token"
        assert (await call(alice, "whoami"))["auth"] == "jwt"
