"""A session service over the test store (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from chatmemory_adk import ChatMemorySessionService

from chatmemory import ChatMemory


@pytest.fixture
def service(memory: ChatMemory) -> ChatMemorySessionService:
    return ChatMemorySessionService(memory)
