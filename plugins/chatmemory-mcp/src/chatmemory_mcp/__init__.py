"""The chatmemory MCP server: agents record and read their runs through MCP tools.

``chatmemory-mcp stdio`` serves one client as a fixed principal; ``chatmemory-mcp http``
serves many, each identified by a bearer token. ``build_server`` builds the server in code.

Names are loaded on first use, so a stdio server never imports the HTTP, JWT and OAuth code.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatmemory_mcp.bearer import AnyOfVerifier, Identity, principal_from_authorization
    from chatmemory_mcp.http_app import build_http_app
    from chatmemory_mcp.identity import ServerState, principal_from_env
    from chatmemory_mcp.jwts import JWTSettings, JWTVerifier
    from chatmemory_mcp.server import build_server
    from chatmemory_mcp.settings import ConfigError, HttpSettings
    from chatmemory_mcp.tokens import TokenFile, TokenFileVerifier, hash_token

__all__ = [
    "AnyOfVerifier",
    "ConfigError",
    "HttpSettings",
    "Identity",
    "JWTSettings",
    "JWTVerifier",
    "ServerState",
    "TokenFile",
    "TokenFileVerifier",
    "build_http_app",
    "build_server",
    "hash_token",
    "principal_from_authorization",
    "principal_from_env",
]

_HOMES = {
    "AnyOfVerifier": "bearer",
    "Identity": "bearer",
    "principal_from_authorization": "bearer",
    "ConfigError": "settings",
    "HttpSettings": "settings",
    "JWTSettings": "jwts",
    "JWTVerifier": "jwts",
    "ServerState": "identity",
    "principal_from_env": "identity",
    "TokenFile": "tokens",
    "TokenFileVerifier": "tokens",
    "hash_token": "tokens",
    "build_http_app": "http_app",
    "build_server": "server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'chatmemory_mcp' has no attribute {name!r}")
    value = getattr(import_module(f"chatmemory_mcp.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
