"""chatmemory over HTTP: the scoped API as JSON, and live changes over Server-Sent Events and WebSocket.

``create_app(memory, verifier=...)`` builds the ASGI app; ``chatmemory-server`` runs it.
Identity comes from bearer tokens (the token file) or JWTs, shared with ``chatmemory-mcp http``.

Names are loaded on first use, so the token and JWT code imports neither Starlette nor uvicorn.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatmemory_server.app import create_app
    from chatmemory_server.auth_options import ConfigError
    from chatmemory_server.bearer import (
        AnyOfVerifier,
        AuthenticationError,
        BearerVerifier,
        CredentialsRefused,
        Identity,
        MissingCredentials,
        principal_from_authorization,
    )
    from chatmemory_server.jwts import JWTSettings, JWTVerifier
    from chatmemory_server.tokens import TokenFile, TokenFileVerifier, hash_token

__all__ = [
    "AnyOfVerifier",
    "AuthenticationError",
    "BearerVerifier",
    "ConfigError",
    "CredentialsRefused",
    "Identity",
    "JWTSettings",
    "JWTVerifier",
    "MissingCredentials",
    "TokenFile",
    "TokenFileVerifier",
    "create_app",
    "hash_token",
    "principal_from_authorization",
]

_HOMES = {
    "create_app": "app",
    "ConfigError": "auth_options",
    "AnyOfVerifier": "bearer",
    "AuthenticationError": "bearer",
    "BearerVerifier": "bearer",
    "CredentialsRefused": "bearer",
    "Identity": "bearer",
    "MissingCredentials": "bearer",
    "principal_from_authorization": "bearer",
    "JWTSettings": "jwts",
    "JWTVerifier": "jwts",
    "TokenFile": "tokens",
    "TokenFileVerifier": "tokens",
    "hash_token": "tokens",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'chatmemory_server' has no attribute {name!r}")
    value = getattr(import_module(f"chatmemory_server.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
