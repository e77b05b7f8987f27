"""Re-exports ``chatmemory_server.tokens``, where this code lives: one implementation serves the
MCP server and the HTTP API, so a token or JWT means the same principal on both."""

from __future__ import annotations

from chatmemory_server.tokens import (
    TOKEN_FILE_ENV,
    TOKEN_PREFIX,
    TokenEntry,
    TokenFile,
    TokenFileVerifier,
    default_token_file,
    hash_token,
)

__all__ = [
    "TOKEN_FILE_ENV",
    "TOKEN_PREFIX",
    "TokenEntry",
    "TokenFile",
    "TokenFileVerifier",
    "default_token_file",
    "hash_token",
]
