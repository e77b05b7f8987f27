"""JWT bearer tokens: accepted only when signed by the issuer, for this audience, unexpired."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from chatmemory_mcp import HttpSettings, JWTSettings, JWTVerifier, build_http_app
from chatmemory_server.auth_options import add_jwt_options
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from chatmemory import ChatMemory, Principal
from tests.plugins.mcp_server._serving import http_client, loopback_socket, post_raw, serving
from tests.plugins.mcp_server.conftest import call, fail

ISSUER = "https://id.example.com"
AUDIENCE = "https://memory.example.com/mcp"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
SETTINGS = JWTSettings(
    issuer=ISSUER,
    audience=AUDIENCE,
    public_key=PUBLIC_PEM.decode(),
    tenant_claim="org",
    admin_scope="chatmemory:admin",
)
PING = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami"}}).encode()


def token(sub: str | None = "alice", *, key: Any = KEY, algorithm: str = "RS256", **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 600,
        "scope": "chatmemory",
        "org": "acme",
    }
    if sub is not None:
        claims["sub"] = sub
    claims.update(overrides)
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None}, key, algorithm=algorithm, headers={"kid": "k1"}
    )


def _confused() -> str:
    """An HS256 token keyed with the public key, the classic algorithm-confusion forgery."""
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "root", "exp": int(time.time()) + 600}
    signing_input = b".".join(_b64(json.dumps(part).encode()) for part in (header, claims))
    return (
        signing_input + b"." + _b64(hmac.new(PUBLIC_PEM, signing_input, hashlib.sha256).digest())
    ).decode()


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


async def test_a_valid_token_names_its_principal() -> None:
    verifier = JWTVerifier(SETTINGS)
    accepted = await verifier.identify(token("alice", org="acme"))
    assert accepted is not None
    assert accepted.subject == "alice"
    assert (accepted.principal, accepted.method) == (Principal("alice", tenant=f"{ISSUER}#acme"), "jwt")
    admin = await verifier.identify(token("root", org="acme", scope="chatmemory chatmemory:admin"))
    assert admin is not None
    assert admin.principal.admin is True
    listed = await verifier.identify(token("root", org="acme", scope=None, scp=["chatmemory:admin"]))
    assert listed is not None
    assert listed.principal.admin is True


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(token(exp=int(time.time()) - 10), id="expired"),
        pytest.param(token(aud="https://other.example.com/mcp"), id="wrong-audience"),
        pytest.param(token(iss="https://evil.example.com"), id="wrong-issuer"),
        pytest.param(token(key=OTHER_KEY), id="wrong-key"),
        pytest.param(token(None), id="no-subject"),
        pytest.param(token(exp=None), id="no-expiry"),
        pytest.param(token("x" * 300), id="subject-too-long"),
        pytest.param(_confused(), id="algorithm-confusion"),
        pytest.param(
            jwt.encode({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE}, None, algorithm="none"),
            id="alg-none",
        ),
        pytest.param("not.a.jwt", id="malformed"),
        pytest.param("", id="empty"),
        pytest.param(token() + "x", id="bad-signature"),
    ],
)
async def test_bad_tokens_are_refused(bad: str) -> None:
    assert await JWTVerifier(SETTINGS).identify(bad) is None


async def test_no_token_makes_an_admin_unless_an_admin_scope_is_configured() -> None:
    """Admins are opt-in: an issuer's tokens may carry any scope its other clients ask for."""
    unset = dataclasses.replace(SETTINGS, admin_scope=None)
    for scope in ("chatmemory chatmemory:admin", "chatmemory:admin"):
        accepted = await JWTVerifier(unset).identify(token("root", org="acme", scope=scope))
        assert accepted is not None and accepted.principal.admin is False
    parser = argparse.ArgumentParser()
    add_jwt_options(parser, audience_default="--public-url")
    assert parser.parse_args([]).jwt_admin_scope is None
    assert parser.parse_args(["--jwt-admin-scope", "ops"]).jwt_admin_scope == "ops"


async def test_jwts_over_http(memory: ChatMemory) -> None:
    sock = loopback_socket()
    settings = HttpSettings(
        host="127.0.0.1", port=sock.getsockname()[1], jwt=SETTINGS, public_url=AUDIENCE[:-4]
    )
    async with serving(build_http_app(settings, memory=memory), sock) as url:
        for bad in (
            token(exp=int(time.time()) - 10),
            token(aud="https://other.example.com"),
            "garbage",
            token(key=OTHER_KEY),
        ):
            assert (await post_raw(url, PING, bad)).status_code == 401
        async with http_client(url, token("alice")) as alice, http_client(url, token("bob")) as bob:
            assert (await call(alice, "whoami"))["auth"] == "jwt"
            conv = await call(alice, "start_conversation", {"title": "mine"})
            assert "not found" in await fail(bob, "get_conversation", {"conversation_id": conv["id"]})
        async with http_client(url, token("root", scope="chatmemory:admin")) as root:
            listed = await call(root, "list_conversations")
            assert [c["owner_id"] for c in listed["items"]] == ["alice"]
    alice = Principal("alice", tenant=f"{ISSUER}#acme")
    assert (await memory.scoped(alice).get_conversation(conv["id"])).title == "mine"


async def test_keys_from_a_jwks_url() -> None:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True) | {"kid": "k1", "use": "sig"}

    async def jwks(_: object) -> JSONResponse:
        return JSONResponse({"keys": [jwk]})

    sock = loopback_socket()
    async with serving(Starlette(routes=[Route("/jwks", jwks)]), sock) as url:
        verifier = JWTVerifier(JWTSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=f"{url}/jwks"))
        accepted = await verifier.identify(token("alice"))
        assert accepted is not None
        assert accepted.subject == "alice"
        assert await verifier.identify(token("alice", key=OTHER_KEY)) is None


def test_settings_need_exactly_one_key_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        JWTSettings(issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ValueError, match="exactly one"):
        JWTSettings(issuer=ISSUER, audience=AUDIENCE, public_key="k", jwks_url="https://x")


async def test_a_clock_behind_the_issuers_is_tolerated_but_never_past_expiry() -> None:
    """A token issued (or valid from) a few seconds "in the future" by an issuer whose clock runs
    ahead is accepted, up to ``clock_skew``; a token is refused from its ``exp`` on, whatever
    the skew."""
    now = int(time.time())
    verifier = JWTVerifier(SETTINGS)
    for ahead in ({"iat": now + 30}, {"nbf": now + 30}):
        assert await verifier.identify(token(**ahead)) is not None, ahead
    for too_far in ({"iat": now + 600}, {"nbf": now + 600}):
        assert await verifier.identify(token(**too_far)) is None, too_far
    assert await verifier.identify(token(exp=now - 1)) is None
    strict = JWTVerifier(dataclasses.replace(SETTINGS, clock_skew=0))
    assert await strict.identify(token(iat=now + 30)) is None
    for bad in (-1.0, 7_200.0):
        with pytest.raises(ValueError, match="clock_skew"):
            dataclasses.replace(SETTINGS, clock_skew=bad)
