"""chatmemory capability for pydantic-ai: every run recorded as a history."""

from __future__ import annotations

__all__: list[str] = []
