"""chatmemory for Google ADK."""

from __future__ import annotations
