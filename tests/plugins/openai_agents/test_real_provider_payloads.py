"""The Agents SDK's own OpenAI models with ChatMemorySession, on bodies shaped as the OpenAI API
returns them (served in process through ``httpx.MockTransport``): reasoning items with encrypted
content, annotated text with logprobs, function calls, cached and reasoning token counts, plain and
streamed, through the Responses and the Chat Completions APIs.

The session store is the SDK's contract: each request must be exactly what the same turns send
with the SDK's own ``SQLiteSession`` (of the same session id, which names the prompt cache key).
"""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, Model, Runner, SQLiteSession, function_tool
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import Conversation
from chatmemory.scope import Scope
from tests.plugins._openai_http import (
    FakeOpenAI,
    chat_completion,
    chat_tool_call,
    function_call,
    message,
    reasoning,
    reset_ids,
    response,
)

WIRINGS = ["session.run", "session.run_streamed", "Runner.run+hooks", "Runner.run_streamed+hooks"]


@function_tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _script(api: str) -> FakeOpenAI:
    reset_ids()
    if api == "responses":
        answered_by = "gpt-5-2025-08-07"
        return FakeOpenAI(
            response([reasoning(), function_call("add", {"a": 2, "b": 3})], answered_by),
            response([reasoning("It is 5."), message("The sum is 5.")], answered_by),
            response([message("Still 5.")], answered_by),
        )
    answered_by = "gpt-4.1-mini-2025-04-14"
    return FakeOpenAI(
        chat_completion(answered_by, None, [chat_tool_call("add", {"a": 2, "b": 3})]),
        chat_completion(answered_by, "The sum is 5."),
        chat_completion(answered_by, "Still 5."),
    )


def _agent(api: str, fake: FakeOpenAI) -> Agent[Any]:
    model: Model
    if api == "responses":
        model = OpenAIResponsesModel(model="gpt-5", openai_client=fake.client())
    else:
        model = OpenAIChatCompletionsModel(model="gpt-4.1-mini", openai_client=fake.client())
    return Agent(name="calc", instructions="Be brief.", model=model, tools=[add])


async def _turn(agent: Agent[Any], session: Any, wiring: str, prompt: str) -> Any:
    own = isinstance(session, ChatMemorySession)
    hooks = {"hooks": session.hooks} if own and "+hooks" in wiring else {}
    if wiring == "session.run" and own:
        return (await session.run(agent, prompt)).final_output
    if "streamed" in wiring:
        streamed = (
            session.run_streamed(agent, prompt)
            if wiring == "session.run_streamed" and own
            else Runner.run_streamed(agent, prompt, session=session, **hooks)
        )
        async for _ in streamed.stream_events():
            pass
        return streamed.final_output
    return (await Runner.run(agent, prompt, session=session, **hooks)).final_output


@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_turns_send_what_they_send_with_the_sdks_own_session(
    alice: Scope, conversation: Conversation, api: str, wiring: str
) -> None:
    ours, theirs = _script(api), _script(api)
    session = ChatMemorySession(alice, conversation.id)
    sqlite = SQLiteSession(str(conversation.id))
    outputs = []
    for fake, used in ((ours, session), (theirs, sqlite)):
        agent = _agent(api, fake)
        outputs.append([await _turn(agent, used, wiring, p) for p in ("What is 2+3?", "And again?")])
    assert outputs == [["The sum is 5.", "Still 5."]] * 2
    assert len(ours.requests) == 3
    assert ours.requests == theirs.requests

    first, second = (await alice.get_conversation(conversation.id, messages=True)).histories
    model = "gpt-5" if api == "responses" else "gpt-4.1-mini"
    assert (first.model, first.status, second.model, second.status) == (
        model,
        "completed",
        model,
        "completed",
    )
    roles = ["user", "assistant", "tool", "assistant"]
    if api == "responses":  # each reasoning item is a message of its own
        roles = ["user", "assistant", "assistant", "tool", "assistant", "assistant"]
    assert [m.role for m in first.messages or ()] == roles
    assert (first.messages or [])[-1].content == "The sum is 5."
    per_call = (320, 210) if api == "responses" else (310, 42)
    reasoning = 192 if api == "responses" else 16
    assert first.usage == {
        "requests": 2,
        "input_tokens": 2 * per_call[0],
        "output_tokens": 2 * per_call[1],
        "total_tokens": 2 * sum(per_call),
        "cached_tokens": 2 * 256,
        "reasoning_tokens": 2 * reasoning,
    }


async def test_an_answer_longer_than_the_content_limit_does_not_fail_the_run(
    alice: Scope, conversation: Conversation
) -> None:
    reset_ids()
    essay = "word " * 24_000
    fake = FakeOpenAI(response([message(essay)], "gpt-5-2025-08-07"))
    result = await ChatMemorySession(alice, conversation.id).run(_agent("responses", fake), "Write an essay.")
    assert result.final_output == essay
