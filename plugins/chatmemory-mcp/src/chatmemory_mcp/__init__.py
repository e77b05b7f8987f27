"""MCP server for chatmemory: agents persist and read their runs through MCP tools."""

from __future__ import annotations

__all__: list[str] = []
