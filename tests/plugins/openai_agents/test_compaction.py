"""``OpenAIResponsesCompactionSession`` over a ``ChatMemorySession``: atomic replacement, provenance kept.

Drives the SDK's compaction wrapper the way its own suite does
(openai/openai-agents-python ``tests/memory/test_openai_responses_compaction_session.py``:
automatic compaction after a run, and a forced ``run_compaction``). The compaction endpoint is
answered by a local HTTP handler behind the real ``AsyncOpenAI`` client; nothing leaves the
process.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from agents import Runner
from agents.memory import OpenAIResponsesCompactionSession
from agents.testing import assistant_message
from chatmemory_openai_agents import ChatMemorySession
from openai import AsyncOpenAI

from chatmemory import Conversation
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, make_agent

COMPACTED = {"type": "compaction", "id": "cmp_item_1", "encrypted_content": "SUMMARY OF EVERYTHING"}


class CompactEndpoint:
    """The ``/responses/compact`` endpoint: remembers each request, answers with one compaction item."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/responses/compact")
        self.requests.append(json.loads(request.content))
        usage = {
            "input_tokens": 50,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 55,
        }
        body = {
            "id": "cmp_1",
            "created_at": 0,
            "object": "response.compaction",
            "output": [COMPACTED],
            "usage": usage,
        }
        return httpx.Response(200, json=body)

    def client(self) -> AsyncOpenAI:
        transport = httpx.MockTransport(self.handle)
        return AsyncOpenAI(
            api_key="sk-test-not-used",
            base_url="http://compaction.invalid/v1",
            http_client=httpx.AsyncClient(transport=transport),
        )


@pytest.fixture
def endpoint() -> CompactEndpoint:
    return CompactEndpoint()


async def test_forced_compaction_replaces_items_and_keeps_each_runs_provenance(
    alice: Scope, conversation: Conversation, endpoint: CompactEndpoint
) -> None:
    store = ChatMemorySession(alice, conversation.id, metadata={"app": "demo"})
    model = NamedModel("agent-model", [[assistant_message("One.")], [assistant_message("Two.")]])
    await store.run(make_agent("helper", model), "First?")
    await store.run(make_agent("helper", model), "Second?")
    before = (await alice.get_conversation(conversation.id)).histories
    stored = await store.get_items()

    session = OpenAIResponsesCompactionSession("s", store, client=endpoint.client())
    await session.run_compaction({"force": True, "compaction_mode": "input"})

    assert endpoint.requests[-1]["input"] == stored
    assert await store.get_items() == [COMPACTED]
    after = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert [h.model_dump(exclude={"messages", "updated_at"}) for h in after[:2]] == [
        h.model_dump(exclude={"messages", "updated_at"}) for h in before
    ]
    assert [h.messages for h in after[:2]] == [[], []]
    compaction = after[2]
    assert compaction.status == "completed"
    assert compaction.metadata is not None
    assert compaction.metadata["compaction"] == {"replaced": 4}
    assert compaction.metadata["app"] == "demo"
    assert [m.native.data if m.native else None for m in compaction.messages or []] == [COMPACTED]


async def test_automatic_compaction_after_a_run_replaces_the_runs_items(
    alice: Scope, conversation: Conversation, endpoint: CompactEndpoint
) -> None:
    store = ChatMemorySession(alice, conversation.id, model="session-default")
    session = OpenAIResponsesCompactionSession(
        "s", store, client=endpoint.client(), should_trigger_compaction=lambda context: True
    )
    model = NamedModel("agent-model", [[assistant_message("Hello!")]])
    result = await Runner.run(make_agent("helper", model), "Hi", session=session)
    assert result.final_output == "Hello!"

    assert len(endpoint.requests) == 1
    assert await store.get_items() == [COMPACTED]
    run, compaction = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert (run.model, run.status, run.messages) == ("session-default", "completed", [])
    assert compaction.metadata is not None
    assert compaction.metadata["compaction"] == {"replaced": 2}

    # The next run's model sees the compacted history, then its new input.
    follow_up = NamedModel("agent-model", [[assistant_message("Again!")]])
    await Runner.run(make_agent("helper", follow_up), "More", session=store)
    assert follow_up.last_call is not None
    assert follow_up.last_call.input == [COMPACTED, {"role": "user", "content": "More"}]


async def test_a_snapshot_whose_tail_changed_is_not_replaced(
    alice: Scope, conversation: Conversation
) -> None:
    store = ChatMemorySession(alice, conversation.id)
    items: list[Any] = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    await store.add_items(items)
    snapshot = await store._get_compaction_snapshot(10)
    assert snapshot is not None
    assert (snapshot.items, snapshot.complete) == (items, True)

    await store.add_items([{"role": "user", "content": "c"}])
    assert await snapshot.replace_suffix(0, [COMPACTED]) is False  # type: ignore[list-item]
    assert await store.get_items() == [*items, {"role": "user", "content": "c"}]
    assert len((await alice.get_conversation(conversation.id)).histories) == 2

    fresh = await store._get_compaction_snapshot(2)
    assert fresh is not None
    assert (len(fresh.items), fresh.complete) == (2, False)
    assert await fresh.replace_suffix(1, [COMPACTED]) is True  # type: ignore[list-item]
    assert await store.get_items() == [items[0], items[1], COMPACTED]


class KeepingCompactEndpoint(CompactEndpoint):
    """The endpoint as it answers a long conversation: every user message kept, then the compaction."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = super().handle(request)
        body = json.loads(response.content)
        kept = [i for i in self.requests[-1]["input"] if i.get("role") == "user"]
        body["output"] = [*kept, COMPACTED]
        return httpx.Response(200, json=body)


async def test_a_compaction_answering_more_items_than_one_append_holds(
    alice: Scope, conversation: Conversation
) -> None:
    store = ChatMemorySession(alice, conversation.id)
    items: list[Any] = []
    for i in range(1_200):
        items += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    await store.add_items(items)
    endpoint = KeepingCompactEndpoint()

    session = OpenAIResponsesCompactionSession("s", store, client=endpoint.client())
    await session.run_compaction({"force": True, "compaction_mode": "input"})

    expected = [*(item for item in items if item["role"] == "user"), COMPACTED]
    assert await store.get_items() == expected
    compaction = (await alice.get_conversation(conversation.id)).histories[-1]
    assert compaction.status == "completed"
    assert compaction.metadata is not None
    assert compaction.metadata["compaction"] == {"replaced": 2_400}
