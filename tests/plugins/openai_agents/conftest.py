"""Offline Agents SDK setup: a dummy API key and tracing off; a conversation of alice's."""

from __future__ import annotations

import pytest
from agents import set_tracing_disabled

from chatmemory import Conversation
from chatmemory.scope import Scope


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    set_tracing_disabled(True)


@pytest.fixture
async def conversation(alice: Scope) -> Conversation:
    return await alice.start_conversation(title="Agents")
