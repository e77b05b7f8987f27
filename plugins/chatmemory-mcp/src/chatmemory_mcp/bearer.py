"""Re-exports ``chatmemory_server.bearer``, where this code lives: one implementation serves the
MCP server and the HTTP API, so a token or JWT means the same principal on both."""

from __future__ import annotations

from chatmemory_server.bearer import *  # noqa: F403
from chatmemory_server.bearer import __all__ as __all__
