"""``principal_from_authorization``: one request's Authorization header to a principal, no web framework."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from chatmemory_mcp import AnyOfVerifier, JWTSettings, JWTVerifier, TokenFile, TokenFileVerifier
from chatmemory_mcp.bearer import CredentialsRefused, MissingCredentials, principal_from_authorization

from chatmemory import Principal
from tests.plugins.mcp_server._issuer import issuing


async def test_a_header_becomes_a_principal_or_a_typed_refusal(tmp_path: Path) -> None:
    token, _ = TokenFile(tmp_path / "tokens.json").create(Principal("alice", tenant="acme"))
    verifier = TokenFileVerifier(tmp_path / "tokens.json")
    for header in (f"Bearer {token}", f"bearer  {token} ", f"BEARER {token}"):
        assert await principal_from_authorization(header, verifier) == Principal("alice", tenant="acme")
    for missing in (None, "", "Bearer", "Bearer   ", f"Basic {token}", token):
        with pytest.raises(MissingCredentials, match="authentication required"):
            await principal_from_authorization(missing, verifier)
    for refused in ("Bearer cmt_unknown", f"Bearer {token}x", "Bearer " + "a" * 9_000):
        with pytest.raises(CredentialsRefused, match="refused"):
            await principal_from_authorization(refused, verifier)


async def test_token_file_and_jwt_verifiers_combine(tmp_path: Path) -> None:
    token, _ = TokenFile(tmp_path / "tokens.json").create(Principal("ops", admin=True))
    async with issuing() as issuer:
        jwt = JWTVerifier(JWTSettings(issuer=issuer.url, audience="api", jwks_url=f"{issuer.url}/jwks"))
        verifier = AnyOfVerifier([TokenFileVerifier(tmp_path / "tokens.json"), jwt])
        assert await principal_from_authorization(f"Bearer {token}", verifier) == Principal("ops", admin=True)
        minted = issuer.mint("alice", aud="api")
        assert await principal_from_authorization(f"Bearer {minted}", verifier) == Principal(
            "alice", tenant=issuer.url
        )
        with pytest.raises(CredentialsRefused):
            await principal_from_authorization(f"Bearer {issuer.mint('alice', aud='web')}", verifier)


async def test_a_token_lives_at_least_as_long_as_it_was_made_to(tmp_path: Path) -> None:
    """Whole seconds are rounded up: ``expires_in=1`` never makes a token that is already gone."""
    for _ in range(5):
        before = time.time()
        token, entry = TokenFile(tmp_path / "tokens.json").create(Principal("alice"), expires_in=1)
        assert entry.expires_at is not None and entry.expires_at >= before + 1
        verifier = TokenFileVerifier(tmp_path / "tokens.json")
        assert await principal_from_authorization(f"Bearer {token}", verifier) == Principal("alice")
        time.sleep(0.13)
