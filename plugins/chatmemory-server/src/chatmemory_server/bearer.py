"""Bearer credentials to principals, independent of any web framework or protocol SDK.

A verifier turns a presented token into an ``Identity`` (a ``Principal`` plus how it was
established) or refuses it with ``None``. ``principal_from_authorization`` does the whole
job for one request's ``Authorization`` header::

    verifier = AnyOfVerifier([TokenFileVerifier(path), JWTVerifier(settings)])
    principal = await principal_from_authorization(request.headers.get("authorization"), verifier)

This module imports only the standard library and ``chatmemory``; the JWT verifier (which
needs PyJWT) lives in ``chatmemory_server.jwts`` and the token file in ``chatmemory_server.tokens``.

Errors::

    AuthenticationError (ChatMemoryError)
    ├── MissingCredentials   no bearer token was presented
    └── CredentialsRefused   a token was presented and refused
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from chatmemory import ChatMemoryError, Principal

__all__ = [
    "ADMIN_SCOPE",
    "MAX_TOKEN_LENGTH",
    "AnyOfVerifier",
    "AuthenticationError",
    "BearerVerifier",
    "CredentialsRefused",
    "Identity",
    "MissingCredentials",
    "bearer_token",
    "identify_authorization",
    "principal_from_authorization",
]

ADMIN_SCOPE = "chatmemory:admin"
"""The scope that makes a token's principal an admin of its tenant."""

MAX_TOKEN_LENGTH = 8_192
"""Longer tokens are refused without being parsed."""

Method = Literal["token", "jwt"]


class AuthenticationError(ChatMemoryError):
    """A request could not be tied to a principal."""


class MissingCredentials(AuthenticationError):
    """The request carries no bearer token."""

    def __init__(self) -> None:
        super().__init__("authentication required: send Authorization: Bearer <token>")


class CredentialsRefused(AuthenticationError):
    """The request's bearer token was refused: unknown, revoked, expired, badly signed or not for us."""

    def __init__(self) -> None:
        super().__init__(
            "the bearer token was refused: it is unknown, revoked, expired or not for this server"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who a verified token stands for, and how that was established.

    Attributes:
        principal: the principal every call of the request runs as.
        method: ``"token"`` (the token file) or ``"jwt"`` (a signed token from an issuer).
        subject: the token's own name for its holder (the token file's principal, a JWT's ``sub``).
        client_id: the token's id (token file) or the OAuth client it was issued to (JWT).
        issuer: the JWT issuer; ``None`` for the token file.
        scopes: the scopes the token grants.
        expires_at: Unix time the token stops being valid, if it does.
    """

    principal: Principal
    method: Method
    subject: str
    client_id: str
    issuer: str | None = None
    scopes: tuple[str, ...] = field(default_factory=tuple)
    expires_at: int | None = None

    @property
    def expired(self) -> bool:
        """Whether ``expires_at`` has passed."""
        return self.expires_at is not None and self.expires_at <= time.time()


class BearerVerifier(Protocol):
    """Anything that checks a bearer token."""

    async def identify(self, token: str) -> Identity | None:
        """The identity ``token`` stands for, or ``None`` when it is refused."""
        ...


class AnyOfVerifier:
    """Accepts a token that any of its verifiers accepts, asking them in order."""

    def __init__(self, verifiers: Sequence[BearerVerifier]) -> None:
        self.verifiers = list(verifiers)

    async def identify(self, token: str) -> Identity | None:
        """The first verifier's answer that is not ``None``."""
        for verifier in self.verifiers:
            found = await verifier.identify(token)
            if found is not None:
                return found
        return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or ``None`` for any other."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def identify_authorization(authorization: str | None, verifier: BearerVerifier) -> Identity:
    """The identity behind one request's ``Authorization`` header.

    Raises:
        MissingCredentials: no bearer token in the header.
        CredentialsRefused: the token is refused or has expired.
    """
    token = bearer_token(authorization)
    if token is None:
        raise MissingCredentials()
    if len(token) > MAX_TOKEN_LENGTH:
        raise CredentialsRefused()
    identity = await verifier.identify(token)
    if identity is None or identity.expired:
        raise CredentialsRefused()
    return identity


async def principal_from_authorization(authorization: str | None, verifier: BearerVerifier) -> Principal:
    """The principal one request's ``Authorization`` header stands for.

    Raises:
        MissingCredentials: no bearer token in the header.
        CredentialsRefused: the token is refused or has expired.
    """
    return (await identify_authorization(authorization, verifier)).principal
