"""chatmemory for LangChain: a middleware that records and resumes ``create_agent`` runs,
and a chat message history for legacy chains."""

from __future__ import annotations

from chatmemory.loops import BackgroundLoop
from chatmemory_langchain._convert import NATIVE_FORMAT, from_stored, to_new_message
from chatmemory_langchain.history import ChatMemoryHistory
from chatmemory_langchain.middleware import ChatMemoryMiddleware, ChatMemoryState

__all__ = [
    "NATIVE_FORMAT",
    "BackgroundLoop",
    "ChatMemoryHistory",
    "ChatMemoryMiddleware",
    "ChatMemoryState",
    "from_stored",
    "to_new_message",
]
