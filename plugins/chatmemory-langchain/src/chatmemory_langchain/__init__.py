"""chatmemory middleware for LangChain create_agent, and a legacy chat message history."""

from __future__ import annotations

__all__: list[str] = []
