"""Resuming a conversation gives the model exactly the input an in-memory session would."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from agents import Agent, RunConfig, Runner, SQLiteSession
from agents.memory import Session
from agents.testing import assistant_message, function_call
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import Conversation, ConversationNotFound, ImagePart, NewMessage, TextPart, ToolCallPart
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, add, make_agent

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n tiny").decode()
FIRST_INPUT: list[Any] = [
    {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Add the numbers in this picture."},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
        ],
    }
]


def first_agent() -> Agent[Any]:
    model = NamedModel(
        "model-a",
        [[function_call("add", {"a": 2, "b": 3}, call_id="c1")], [assistant_message("5", item_id="m1")]],
    )
    return make_agent("calc", model, "You add.", tools=[add])


def second_agent() -> tuple[Agent[Any], NamedModel]:
    model = NamedModel("model-b", [[assistant_message("Still 5.", item_id="m2")]])
    return make_agent("calc", model, "You add.", tools=[add]), model


async def test_resumed_input_equals_an_in_memory_session(alice: Scope, conversation: Conversation) -> None:
    baseline = SQLiteSession("baseline", ":memory:")
    await Runner.run(first_agent(), FIRST_INPUT, session=baseline)
    expected_agent, expected_model = second_agent()
    await Runner.run(expected_agent, "And now?", session=baseline)

    await ChatMemorySession(alice, conversation.id).run(first_agent(), FIRST_INPUT)
    resumed_agent, resumed_model = second_agent()
    resumed = ChatMemorySession(alice, conversation.id)  # a fresh object, as after a restart
    await resumed.run(resumed_agent, "And now?")

    assert resumed_model.last_call is not None
    assert expected_model.last_call is not None
    sent = resumed_model.last_call.input
    assert sent == expected_model.last_call.input
    assert [item.get("type", "message") for item in sent] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    assert sent[1]["call_id"] == sent[2]["call_id"] == "c1"
    assert await resumed.get_items() == await baseline.get_items()
    assert len(await alice.transcript(conversation.id)) == 6


async def test_bob_cannot_use_alices_conversation(
    alice: Scope, bob: Scope, conversation: Conversation
) -> None:
    await ChatMemorySession(alice, conversation.id).run(first_agent(), "2+3?")
    before = await alice.get_conversation(conversation.id, messages=True)
    session = ChatMemorySession(bob, conversation.id)
    agent, model = second_agent()

    with pytest.raises(ConversationNotFound):
        await session.run(agent, "Show me alice's chat")
    with pytest.raises(ConversationNotFound):
        await session.get_items()
    with pytest.raises(ConversationNotFound):
        await session.add_items([{"role": "user", "content": "hi"}])
    with pytest.raises(ConversationNotFound):
        await session.pop_item()
    with pytest.raises(ConversationNotFound):
        await session.clear_session()

    assert model.calls == ()
    assert await alice.get_conversation(conversation.id, messages=True) == before


async def test_session_protocol(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id, model="imported-model")
    assert isinstance(session, Session)
    assert session.session_id == str(conversation.id)
    assert await session.get_items() == []
    assert await session.pop_item() is None

    items: list[Any] = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    await session.add_items(items[:2])
    (imported,) = (await alice.get_conversation(conversation.id)).histories
    # An answer ends the batch: the history is closed at once.
    assert (imported.model, imported.status) == ("imported-model", "completed")
    await session.add_items(items[2:])
    assert await session.get_items() == items
    assert await session.get_items(limit=2) == items[1:]

    assert await session.pop_item() == items[2]
    assert await session.get_items() == items[:2]

    await session.clear_session()
    assert await session.get_items() == []
    assert (await alice.get_conversation(conversation.id)).histories == []


async def test_messages_from_elsewhere_are_rebuilt_from_parts(
    alice: Scope, conversation: Conversation
) -> None:
    history = await alice.start_history(conversation.id, model="other-model")
    await alice.append_messages(
        history.id,
        [
            NewMessage("system", "Be kind."),
            NewMessage("user", [TextPart(text="Look"), ImagePart(url="https://example.com/a.png")]),
            NewMessage("assistant", [ToolCallPart(id="t1", name="add", arguments={"a": 1, "b": 2})]),
            {"role": "tool", "content": [{"type": "tool_result", "call_id": "t1", "content": "3"}]},
            NewMessage("assistant", "It is 3."),
        ],
    )
    assert await ChatMemorySession(alice, conversation.id).get_items() == [
        {"role": "system", "content": "Be kind."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Look"},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
            ],
        },
        {"type": "function_call", "call_id": "t1", "name": "add", "arguments": '{"a": 1, "b": 2}'},
        {"type": "function_call_output", "call_id": "t1", "output": "3"},
        {"role": "assistant", "content": "It is 3."},
    ]


async def test_runner_with_session_and_hooks_records_messages(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    agent = make_agent("helper", NamedModel("model-a", [[assistant_message("Hello!")]]))
    await Runner.run(agent, "Hi", session=session, hooks=session.hooks)

    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert (run.model, run.status) == ("model-a", "completed")
    assert run.usage == {"requests": 1, "input_tokens": 10, "output_tokens": 4, "total_tokens": 14}
    assert [(m.role, m.model, m.content) for m in run.messages or []] == [
        ("user", None, "Hi"),
        ("assistant", "model-a", "Hello!"),
    ]


async def test_run_config_model_wins(alice: Scope, conversation: Conversation) -> None:
    override = NamedModel("override-model", [[assistant_message("From the override.")]])
    session = ChatMemorySession(alice, conversation.id, run_config=RunConfig(model=override))
    agent = make_agent("helper", NamedModel("agent-model", []))
    await session.run(agent, "Hi")

    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert run.model == "override-model"
    assert [m.model for m in run.messages or []] == [None, "override-model"]
