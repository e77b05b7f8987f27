"""A session service over the test store (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from chatmemory import ChatMemory
from chatmemory_adk import ChatMemorySessionService


@pytest.fixture
def service(memory: ChatMemory) -> ChatMemorySessionService:
    return ChatMemorySessionService(memory)
