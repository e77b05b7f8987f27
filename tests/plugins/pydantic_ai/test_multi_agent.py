"""Agent delegation: a tool of a recorded run calls another agent (``usage=ctx.usage``).

The delegate has no capability, one on another conversation, or one on the same conversation
(a capability of its own, or the outer agent's very object). In every case the outer run's
history holds its own messages, whole; the delegate's run is a history of its own only when it
has a capability, with the delegate's own usage; nothing waits on anything else.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from chatmemory_pydantic_ai import ChatMemoryCapability, load_messages
from pydantic_ai import Agent, RunContext, models
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from chatmemory import HistoryDetail
from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import as_json, resumed_and_read

models.ALLOW_MODEL_REQUESTS = False


def _outer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returned = [p.content for p in messages[-1].parts if p.part_kind == "tool-return"]
    if returned:
        return ModelResponse(parts=[TextPart(f"outer: {returned[0]}")])
    return ModelResponse(parts=[ToolCallPart("delegate", {"question": "2+3"}, tool_call_id="d1")])


def _inner(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart("five")])


def _agents(inner_capabilities: list[Any], outer_capability: ChatMemoryCapability) -> Agent[None, str]:
    inner = Agent(
        FunctionModel(_inner, model_name="fn-inner"), instructions="Inner.", capabilities=inner_capabilities
    )
    outer = Agent(
        FunctionModel(_outer, model_name="fn-outer"), instructions="Outer.", capabilities=[outer_capability]
    )

    @outer.tool
    async def delegate(ctx: RunContext[None], question: str) -> str:
        result = await inner.run(question, usage=ctx.usage)
        return result.output

    return outer


async def _histories(chat: Scope, conversation_id: UUID) -> list[HistoryDetail]:
    return (await chat.get_conversation(str(conversation_id), messages=True)).histories


def _shape(history: HistoryDetail) -> list[tuple[str, str | None, str]]:
    return [(m.role, m.model, m.content) for m in history.messages]


OUTER = [
    ("user", None, "hi"),
    ("assistant", "fn-outer", ""),
    ("tool", None, "five"),
    ("assistant", "fn-outer", "outer: five"),
]
INNER = [("user", None, "2+3"), ("assistant", "fn-inner", "five")]


async def test_a_delegate_without_a_capability_is_part_of_the_outer_run_only(alice: Scope) -> None:
    conv = await alice.start_conversation()
    result = await asyncio.wait_for(_agents([], ChatMemoryCapability(alice, conv.id)).run("hi"), 30)
    assert result.output == "outer: five"

    (outer,) = await _histories(alice, conv.id)
    assert (outer.model, outer.status, outer.system_prompts) == ("fn-outer", "completed", ["Outer."])
    assert _shape(outer) == OUTER
    # pydantic-ai counts the delegate's request in the outer run's usage.
    assert (outer.usage or {})["requests"] == result.usage.requests == 3
    assert as_json(await load_messages(alice, conv.id)) == as_json(result.all_messages())


async def test_a_delegate_with_a_capability_on_another_conversation_records_its_own_run(alice: Scope) -> None:
    conv, other = await alice.start_conversation(), await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    result = await asyncio.wait_for(
        _agents([ChatMemoryCapability(alice, other.id)], capability).run("hi"), 30
    )

    (outer,) = await _histories(alice, conv.id)
    (inner,) = await _histories(alice, other.id)
    assert _shape(outer) == OUTER
    assert _shape(inner) == INNER
    assert (inner.model, inner.status, inner.system_prompts) == ("fn-inner", "completed", ["Inner."])
    assert (outer.usage or {})["requests"] == result.usage.requests == 3
    # The delegate's history counts its own request, not those of the run that called it.
    assert (inner.usage or {})["requests"] == 1
    assert as_json(await load_messages(alice, conv.id)) == as_json(result.all_messages())


@pytest.mark.parametrize("shared", [False, True], ids=["own-capability", "outer-capability"])
async def test_a_delegate_on_the_same_conversation_records_its_run_beside_the_outer_one(
    shared: bool, alice: Scope
) -> None:
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    inner_capability = capability if shared else ChatMemoryCapability(alice, conv.id)
    result = await asyncio.wait_for(_agents([inner_capability], capability).run("hi"), 30)
    assert result.output == "outer: five"

    outer, inner = await _histories(alice, conv.id)
    assert _shape(outer) == OUTER
    assert [m.seq for m in outer.messages] == [1, 2, 5, 6]
    assert _shape(inner) == INNER
    assert [m.seq for m in inner.messages] == [3, 4]
    assert (outer.status, inner.status) == ("completed", "completed")
    assert (inner.usage or {})["requests"] == 1
    # Reloaded history by history: the outer run whole (as its own result holds it), then the
    # delegate's; the agent-level capability resumes from exactly what a fresh read gives.
    loaded = await load_messages(alice, conv.id)
    assert as_json(loaded[:4]) == as_json(result.all_messages())
    assert [p.part_kind for m in loaded[4:] for p in m.parts] == ["user-prompt", "text"]
    resumed, read = await resumed_and_read(alice, conv.id, capability)
    assert resumed == read


async def test_delegates_run_in_parallel_each_record_their_own_usage(alice: Scope) -> None:
    conv, other = await alice.start_conversation(), await alice.start_conversation()

    def outer_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if any(p.part_kind == "tool-return" for p in messages[-1].parts):
            return ModelResponse(parts=[TextPart("done")])
        calls = [ToolCallPart("delegate", {"question": q}, tool_call_id=f"d-{q}") for q in ("a", "b")]
        return ModelResponse(parts=calls)

    async def inner_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await asyncio.sleep(0.05)  # both delegates are waiting on their model at once
        return ModelResponse(parts=[TextPart("x")])

    inner = Agent(
        FunctionModel(inner_model, model_name="fn-inner"),
        capabilities=[ChatMemoryCapability(alice, other.id)],
    )
    outer = Agent(
        FunctionModel(outer_model, model_name="fn-outer"), capabilities=[ChatMemoryCapability(alice, conv.id)]
    )

    @outer.tool
    async def delegate(ctx: RunContext[None], question: str) -> str:
        return (await inner.run(question, usage=ctx.usage)).output

    result = await asyncio.wait_for(outer.run("hi"), 30)
    # Both delegates count on the outer run's usage at the same time: each history counts its own.
    delegates = await _histories(alice, other.id)
    assert [(h.usage or {})["requests"] for h in delegates] == [1, 1]
    (own,) = [m.usage for h in delegates[:1] for m in h.messages if m.role == "assistant"]
    assert own is not None
    assert delegates[0].usage == {"requests": 1, **own}
    (outer_run,) = await _histories(alice, conv.id)
    assert (outer_run.usage or {})["requests"] == result.usage.requests == 4
