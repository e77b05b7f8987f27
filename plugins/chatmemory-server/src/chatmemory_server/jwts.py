"""Signed JWT access tokens from one issuer (an identity provider or OAuth authorization server).

Imported only when JWTs are configured: PyJWT and its crypto backends cost start-up time
that a stdio server does not need.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import jwt

from chatmemory import ChatMemoryError, Principal
from chatmemory_server.bearer import Identity

__all__ = ["JWTSettings", "JWTVerifier"]

logger = logging.getLogger("chatmemory_server")

_JWKS_TIMEOUT = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class JWTSettings:
    """How to check JWTs: their issuer and audience, and the key (PEM) or a JWKS URL to fetch keys.

    ``audience`` is the URL of this resource (the API or MCP endpoint) when the tokens come from an
    OAuth authorization server: a token minted for another service is refused. ``clock_skew`` is
    how many seconds this machine's clock may lag the issuer's: a token issued (``iat``) or valid
    from (``nbf``) that far in the future is accepted. It never extends ``exp``. ``admin_scope``
    is the scope that makes a token's principal an admin (``ADMIN_SCOPE`` is the usual one); with
    none, no token does.
    """

    issuer: str
    audience: str
    public_key: str | None = None
    jwks_url: str | None = None
    algorithms: Sequence[str] = ("RS256", "ES256", "EdDSA")
    admin_scope: str | None = None
    tenant_claim: str | None = None
    clock_skew: float = 60.0

    def __post_init__(self) -> None:
        if (self.public_key is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of public_key or jwks_url")
        if not self.issuer or not self.audience:
            raise ValueError("issuer and audience must not be empty")
        if not 0 <= self.clock_skew <= 3_600:
            raise ValueError("clock_skew must be between 0 and 3600 seconds")


class JWTVerifier:
    """Accepts signed JWTs from one issuer for one audience; the principal is ``sub``.

    ``exp``, ``iss``, ``aud`` and ``sub`` are required. The admin flag comes from the settings'
    ``admin_scope``, when one is set, among the token's scopes (``scope`` or ``scp``).
    Principals live in their issuer's namespace: the tenant is the issuer, followed by ``#``
    and the tenant claim when one is configured. So ``sub=alice`` never reaches the token
    file's ``alice``, and an admin never reaches another issuer's or tenant's users. With a
    tenant claim configured, a token without it, or with a value that is not a string, is
    refused.
    """

    def __init__(self, settings: JWTSettings) -> None:
        self.settings = settings
        self._jwks = (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True, timeout=_JWKS_TIMEOUT)
            if settings.jwks_url
            else None
        )

    async def identify(self, token: str) -> Identity | None:
        """The identity of a valid JWT, or ``None``."""
        s = self.settings
        try:
            key = await self._key(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(s.algorithms),
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.clock_skew,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
            # The leeway is for a clock behind the issuer's; a token is never used past its ``exp``.
            if claims["exp"] <= time.time():
                raise _Refused("expired")
            scopes = _scopes(claims)
            principal = Principal(
                _string(claims, "sub"),
                tenant=self._tenant(claims),
                admin=s.admin_scope is not None and s.admin_scope in scopes,
            )
        except (jwt.PyJWTError, ChatMemoryError, _Refused) as exc:
            logger.info("JWT refused: %s", exc if isinstance(exc, _Refused) else type(exc).__name__)
            return None
        client = claims.get("client_id") or claims.get("azp")
        return Identity(
            principal=principal,
            method="jwt",
            subject=principal.id,
            client_id=client if isinstance(client, str) and client else "jwt",
            issuer=s.issuer,
            scopes=tuple(scopes),
            expires_at=int(claims["exp"]),
        )

    def _tenant(self, claims: dict[str, Any]) -> str:
        claim = self.settings.tenant_claim
        if claim is None:
            return self.settings.issuer
        return f"{self.settings.issuer}#{_string(claims, claim)}"

    async def _key(self, token: str) -> Any:
        if self._jwks is None:
            return self.settings.public_key
        jwks = self._jwks
        # PyJWKClient fetches over blocking HTTP (then caches): keep it off the event loop.
        signing_key = await anyio.to_thread.run_sync(jwks.get_signing_key_from_jwt, token)
        return signing_key.key


class _Refused(Exception):
    """A token refused for its claims: expired, or one that must be a non-empty string is not."""


def _string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise _Refused(f"claim {name!r} is missing or not a non-empty string")
    return value


def _scopes(claims: dict[str, Any]) -> list[str]:
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [s for s in raw if isinstance(s, str)]
    return []
