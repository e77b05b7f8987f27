"""Bearer-token verifiers for the HTTP server: the token file, and JWTs from an identity provider.

A verifier returns an ``AccessToken`` carrying the principal in ``PRINCIPAL_CLAIM``, or
``None``; the SDK answers ``None`` with a 401 before any tool runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import jwt
from mcp.server.auth.provider import AccessToken, TokenVerifier

from chatmemory import ChatMemoryError, Principal
from chatmemory_mcp.identity import ADMIN_SCOPE, PRINCIPAL_CLAIM, token_principal
from chatmemory_mcp.tokens import TokenEntry, TokenFile, hash_token

__all__ = ["AnyOfVerifier", "JWTSettings", "JWTVerifier", "TokenFileVerifier"]

logger = logging.getLogger("chatmemory_mcp")

_MAX_TOKEN = 8_192


class TokenFileVerifier:
    """Accepts the tokens whose SHA-256 is in the token file.

    The file is re-read when it changes, so ``chatmemory-mcp token revoke`` takes effect on
    the next request without a restart.
    """

    def __init__(self, path: Path) -> None:
        self._file = TokenFile(path)
        self._seen: tuple[int, int, int] | None = None
        self._entries: dict[str, TokenEntry] = {}

    async def verify_token(self, token: str) -> AccessToken | None:
        """The principal of ``token``, or ``None`` when it is unknown, revoked or expired."""
        if len(token) > _MAX_TOKEN:
            return None
        entry = self._current().get(hash_token(token))
        if entry is None:
            return None
        claim = token_principal(entry.principal, tenant=entry.tenant, admin=entry.admin, method="token")
        return AccessToken(
            token=token,
            client_id=entry.id,
            subject=entry.principal,
            scopes=["chatmemory", *([ADMIN_SCOPE] if entry.admin else [])],
            expires_at=entry.expires_at,
            claims={PRINCIPAL_CLAIM: claim},
        )

    def _current(self) -> dict[str, TokenEntry]:
        try:
            stat = os.stat(self._file.path)
        except FileNotFoundError:
            self._seen, self._entries = None, {}
            return self._entries
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            try:
                self._entries = self._file.load()
            except ChatMemoryError:
                logger.error("token file %s is unreadable; refusing every token", self._file.path)
                self._entries = {}
            self._seen = seen
        return self._entries


@dataclass(frozen=True, slots=True, kw_only=True)
class JWTSettings:
    """How to check JWTs: their issuer and audience, and the key (PEM) or a JWKS URL to fetch keys."""

    issuer: str
    audience: str
    public_key: str | None = None
    jwks_url: str | None = None
    algorithms: Sequence[str] = ("RS256", "ES256", "EdDSA")
    admin_scope: str = ADMIN_SCOPE
    tenant_claim: str | None = None

    def __post_init__(self) -> None:
        if (self.public_key is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of public_key or jwks_url")


class JWTVerifier:
    """Accepts signed JWTs from one issuer for one audience; the principal is ``sub``.

    ``exp``, ``iss``, ``aud`` and ``sub`` are required. The admin flag comes from a scope
    (``scope`` or ``scp``), the tenant from an optional claim.
    """

    def __init__(self, settings: JWTSettings) -> None:
        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True) if settings.jwks_url else None

    async def verify_token(self, token: str) -> AccessToken | None:
        """The principal of a valid JWT, or ``None``."""
        s = self.settings
        if len(token) > _MAX_TOKEN:
            return None
        try:
            key = await self._key(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(s.algorithms),
                audience=s.audience,
                issuer=s.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
            scopes = _scopes(claims)
            tenant = claims.get(s.tenant_claim) if s.tenant_claim else None
            principal = Principal(
                str(claims["sub"]),
                tenant=None if tenant is None else str(tenant),
                admin=s.admin_scope in scopes,
            )
        except (jwt.PyJWTError, ChatMemoryError) as exc:
            logger.info("JWT refused: %s", type(exc).__name__)
            return None
        claim = token_principal(principal.id, tenant=principal.tenant, admin=principal.admin, method="jwt")
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("azp") or "jwt"),
            subject=principal.id,
            scopes=scopes,
            expires_at=int(claims["exp"]),
            claims={"iss": s.issuer, PRINCIPAL_CLAIM: claim},
        )

    async def _key(self, token: str) -> Any:
        if self._jwks is None:
            return self.settings.public_key
        jwks = self._jwks
        # PyJWKClient fetches over blocking HTTP (then caches): keep it off the event loop.
        signing_key = await anyio.to_thread.run_sync(jwks.get_signing_key_from_jwt, token)
        return signing_key.key


class AnyOfVerifier:
    """Accepts a token that any of its verifiers accepts, asking them in order."""

    def __init__(self, verifiers: Sequence[TokenVerifier]) -> None:
        self.verifiers = list(verifiers)

    async def verify_token(self, token: str) -> AccessToken | None:
        """The first verifier's answer that is not ``None``."""
        for verifier in self.verifiers:
            accepted = await verifier.verify_token(token)
            if accepted is not None:
                return accepted
        return None


def _scopes(claims: dict[str, Any]) -> list[str]:
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [str(s) for s in raw]
    return []
