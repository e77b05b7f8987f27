"""Translation between LangChain messages and chatmemory messages."""

from __future__ import annotations

from chatmemory_langchain import to_new_message
from chatmemory_langchain._convert import model_name_of
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from chatmemory import FilePart, NewMessage, ReasoningPart, TextPart, ToolCallPart, ToolResultPart
from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import fake
from tests.plugins.langchain_adapter._helpers import SYSTEM, agent, user


def test_roles_models_and_parts() -> None:
    answer = AIMessage(
        content=[{"type": "reasoning", "reasoning": "think"}, {"type": "text", "text": "done"}],
        response_metadata={"model_name": "gpt-x"},
        usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        id="a-1",
    )
    stored = to_new_message(answer)
    assert (stored.role, stored.model, stored.key, stored.text) == ("assistant", "gpt-x", "a-1", "done")
    assert stored.parts == [ReasoningPart(text="think"), TextPart(text="done")]
    assert stored.usage == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    assert to_new_message(SystemMessage("rules")).role == "system"
    assert to_new_message(ChatMessage("rules", role="developer")).role == "system"
    assert to_new_message(FunctionMessage("42", name="add")).role == "tool"
    failed = to_new_message(ToolMessage("bad args", tool_call_id="c9", status="error"))
    assert failed.parts == [ToolResultPart(call_id="c9", content="bad args", is_error=True)]


def test_media_the_neutral_form_cannot_hold_stays_in_the_native_form_only() -> None:
    message = HumanMessage(
        content=[
            {"type": "file", "url": "https://example.com/a.pdf", "extras": {"filename": "a.pdf"}},
            {"type": "file", "file_id": "file-123"},
            {"type": "image", "base64": "not base64!", "mime_type": "image/png"},
        ]
    )
    stored = to_new_message(message)
    assert stored.parts == [FilePart(url="https://example.com/a.pdf", filename="a.pdf")]
    assert stored.native is not None
    assert stored.native.data["data"]["content"] == message.content  # type: ignore[index, call-overload]


def test_model_names() -> None:
    assert model_name_of(fake(name="fake-z")) == "fake-z"
    assert model_name_of(object()) == "object"


async def test_messages_stored_without_a_langchain_form_are_rebuilt_from_parts(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="other-model")
    await alice.append_messages(
        run.id,
        [
            NewMessage("user", "2+2?"),
            NewMessage("assistant", [ToolCallPart(id="c1", name="add", arguments={"a": 2, "b": 2})]),
            NewMessage("tool", [ToolResultPart(call_id="c1", content="4")]),
            NewMessage("assistant", "4"),
        ],
    )
    await alice.finish_history(run.id)
    model = fake("Anything else?")
    await agent(alice, conv.id, model).ainvoke(user("Thanks"))

    system, question, ask, result, answer, thanks = model.seen[0]
    assert [system.text, question.text, result.text, answer.text, thanks.text] == [
        SYSTEM,
        "2+2?",
        "4",
        "4",
        "Thanks",
    ]
    assert isinstance(ask, AIMessage)
    assert ask.tool_calls[0]["id"] == "c1"
    assert isinstance(result, ToolMessage)
    assert result.tool_call_id == "c1"
    assert answer.response_metadata == {"model_name": "other-model"}


async def test_tool_calls_stored_with_json_text_arguments_are_rebuilt_with_them(alice: Scope) -> None:
    # OpenAI sends a call's arguments as JSON text, and LlamaIndex stores them so: the next
    # model call must get them, not a call without arguments.
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="gpt-4o")
    await alice.append_messages(
        run.id,
        [
            NewMessage("user", "2+2?"),
            NewMessage(
                "assistant",
                [
                    ToolCallPart(id="c1", name="add", arguments='{"a": 2, "b": 2}'),
                    ToolCallPart(id="c2", name="add", arguments='{"a": 2,'),
                ],
            ),
            NewMessage("tool", [ToolResultPart(call_id="c1", content="4")]),
            NewMessage("tool", [ToolResultPart(call_id="c2", content="bad arguments", is_error=True)]),
            NewMessage("assistant", "4"),
        ],
    )
    await alice.finish_history(run.id)
    model = fake("Anything else?")
    await agent(alice, conv.id, model).ainvoke(user("Thanks"))

    ask = model.seen[0][2]
    assert isinstance(ask, AIMessage)
    assert ask.tool_calls == [{"id": "c1", "name": "add", "args": {"a": 2, "b": 2}, "type": "tool_call"}]
    assert ask.invalid_tool_calls == [
        {"id": "c2", "name": "add", "args": '{"a": 2,', "error": None, "type": "invalid_tool_call"}
    ]
