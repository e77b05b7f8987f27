"""chatmemory for Google ADK: ``ChatMemorySessionService``, a drop-in ``BaseSessionService``."""

from __future__ import annotations

from chatmemory_adk._events import NATIVE_FORMAT
from chatmemory_adk.provenance import ProvenancePlugin
from chatmemory_adk.service import DEFAULT_MODEL, ChatMemorySessionService

__all__ = ["DEFAULT_MODEL", "NATIVE_FORMAT", "ChatMemorySessionService", "ProvenancePlugin"]
