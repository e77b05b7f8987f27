"""Transactions per run: a read, the first request with the history's start, the answer with its
finish; a response calling tools is stored at once, its results with the next request. On
PostgreSQL each is one statement, the finish's too, though its messages carry keys."""

from __future__ import annotations

import pytest
from chatmemory_pydantic_ai import ChatMemoryCapability
from pydantic_ai import Agent, ModelRetry, models
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from chatmemory import ChatMemory, InvalidInputError
from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import Script, adder
from tests.transactions import counted, statements
from tests.unstorable import too_deep

models.ALLOW_MODEL_REQUESTS = False


async def test_three_transactions_per_turn(memory: ChatMemory, alice: Scope) -> None:
    conv = await alice.start_conversation()
    script = Script("fn-A", tool=False)
    agent = adder(script.model, capabilities=[ChatMemoryCapability(alice, conv.id)])
    await agent.run("first")
    for text in ("second", "third"):
        with counted(memory) as transactions, statements(memory) as sent:
            await agent.run(text)
        assert transactions == ["read", "write", "write"]
        if not memory._db.is_sqlite:  # each one statement, the keyed finish's too
            assert len(sent) == 3, [stmt.sql.postgres[:40] for stmt in sent]
    histories = (await alice.get_conversation(conv.id, messages=True)).histories
    assert [(h.status, [m.role for m in h.messages or ()]) for h in histories] == [
        ("completed", ["user", "assistant"])
    ] * 3
    assert histories[-1].system_prompts == ["You add.", "Be terse."]
    assert len(script.received[-1]) == 5


async def test_a_tool_call_is_stored_before_its_tool_runs(memory: ChatMemory, alice: Scope) -> None:
    conv = await alice.start_conversation()
    agent = adder(Script("fn-A").model, capabilities=[ChatMemoryCapability(alice, conv.id)])
    await agent.run("first")
    with counted(memory) as transactions:
        await agent.run("second")
    # read; request + start; the tool call; the tool's result (the next request); answer + finish
    assert transactions == ["read", "write", "write", "write", "write"]
    history = (await alice.get_conversation(conv.id, messages=True)).histories[-1]
    assert [m.role for m in history.messages or ()] == ["user", "assistant", "tool", "assistant"]


async def test_a_refused_answer_is_stored_with_the_request_retrying_it(alice: Scope) -> None:
    conv = await alice.start_conversation()
    answers = iter(["not a number", "42"])

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(next(answers))])

    agent = Agent(
        FunctionModel(respond, model_name="fn"), capabilities=[ChatMemoryCapability(alice, conv.id)]
    )

    @agent.output_validator
    def numeric(output: str) -> str:
        if not output.isdigit():
            raise ModelRetry("a number, please")
        return output

    result = await agent.run("how many?")
    assert result.output == "42"
    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert history.status == "completed"
    stored = history.messages or []
    assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]
    assert [stored[0].content, stored[1].content, stored[3].content] == ["how many?", "not a number", "42"]
    assert "a number, please" in stored[2].content


async def test_an_answer_the_store_refuses_still_closes_the_history(alice: Scope) -> None:
    """The answer goes with the history's close: when the store refuses it, the history is
    closed ``failed`` without it, saying why, and the run raises the store's error."""
    conv = await alice.start_conversation()

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("a lot")], provider_details={"trace": too_deep()})

    agent = Agent(
        FunctionModel(respond, model_name="fn"), capabilities=[ChatMemoryCapability(alice, conv.id)]
    )
    with pytest.raises(InvalidInputError):
        await agent.run("say a lot")
    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert history.status == "failed"
    assert (history.error or "").startswith("messages not recorded: ")
    assert [m.content for m in history.messages or ()] == ["say a lot"]
