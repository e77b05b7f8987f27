"""The chatmemory MCP server: agents record and read their runs through MCP tools.

``chatmemory-mcp stdio`` serves one client as a fixed principal; ``chatmemory-mcp http``
serves many, each identified by a bearer token. ``build_server`` builds the server in code.
"""

from __future__ import annotations

from chatmemory_mcp.auth import AnyOfVerifier, JWTSettings, JWTVerifier, TokenFileVerifier
from chatmemory_mcp.http_app import ConfigError, HttpSettings, build_http_app
from chatmemory_mcp.identity import ServerState, principal_from_env
from chatmemory_mcp.server import build_server
from chatmemory_mcp.tokens import TokenFile, hash_token

__all__ = [
    "AnyOfVerifier",
    "ConfigError",
    "HttpSettings",
    "JWTSettings",
    "JWTVerifier",
    "ServerState",
    "TokenFile",
    "TokenFileVerifier",
    "build_http_app",
    "build_server",
    "hash_token",
    "principal_from_env",
]
