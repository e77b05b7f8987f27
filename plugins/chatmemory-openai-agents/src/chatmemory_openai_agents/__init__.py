"""chatmemory Session and run hooks for the OpenAI Agents SDK: every run recorded as a history."""

from __future__ import annotations

__all__: list[str] = []
