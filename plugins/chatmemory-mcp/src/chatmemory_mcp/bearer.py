"""Re-exports ``chatmemory_server.bearer``, where this code lives: one implementation serves the
MCP server and the HTTP API, so a token or JWT means the same principal on both."""

from __future__ import annotations

from chatmemory_server.bearer import (
    ADMIN_SCOPE,
    MAX_TOKEN_LENGTH,
    AnyOfVerifier,
    AuthenticationError,
    BearerVerifier,
    CredentialsRefused,
    Identity,
    MissingCredentials,
    bearer_token,
    identify_authorization,
    principal_from_authorization,
)

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
