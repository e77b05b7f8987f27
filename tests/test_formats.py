"""Provider formats: OpenAI Chat Completions both ways, Anthropic Messages out, through a real store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from chatmemory import (
    AudioPart,
    FilePart,
    ImagePart,
    InvalidInputError,
    Message,
    NewMessage,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.formats import ANTHROPIC_FORMAT, OPENAI_FORMAT, from_openai, to_anthropic, to_openai
from chatmemory.scope import Scope

PNG = "iVBORw0KGgo="
WAV = "UklGRg=="
PDF = "JVBERi0xLjQ="

OPENAI_CHAT: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture, and what is the weather?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}},
            {
                "type": "file",
                "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"},
            },
            {"type": "file", "file": {"file_id": "file-abc123"}},
        ],
    },
    {
        "role": "assistant",
        "content": "A cat. Checking the weather.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "n", "arguments": "not json"}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_3", "content": "ok"},
    {"role": "assistant", "content": "Sunny at noon in Rome."},
    {"role": "user", "content": "Thanks!"},
]


async def _store(scope: Scope, messages: list[NewMessage]) -> list[Message]:
    conv = await scope.start_conversation()
    run = await scope.start_history(conv.id, model="gpt-4.1")
    await scope.append_messages(run.id, messages)
    return await scope.transcript(conv.id)


async def test_openai_round_trip_through_the_store(alice: Scope) -> None:
    stored = await _store(alice, from_openai(OPENAI_CHAT))
    assert to_openai(stored) == OPENAI_CHAT
    assert to_openai(stored, use_native=False) == OPENAI_CHAT
    user = stored[1]
    assert user.parts is not None
    assert [type(p) for p in user.parts] == [TextPart, ImagePart, ImagePart, AudioPart, FilePart, FilePart]
    assert user.parts[1] == ImagePart(data=PNG, media_type="image/png")
    assert user.parts[3] == AudioPart(data=WAV, media_type="audio/wav")
    assert stored[2].parts is not None
    assert stored[2].parts[1] == ToolCallPart(id="call_1", name="weather", arguments='{"city":"Rome"}')
    assert stored[3].parts == [ToolResultPart(call_id="call_1", content="sunny")]
    assert stored[3].content == "sunny"
    assert stored[2].model == "gpt-4.1"
    assert all(m.native is not None and m.native.format == OPENAI_FORMAT for m in stored)


async def test_openai_native_keeps_what_the_neutral_form_cannot(alice: Scope) -> None:
    original = [
        {"role": "developer", "content": "Rules."},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}],
        },
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
    ]
    stored = await _store(alice, from_openai(original))
    assert to_openai(stored) == original
    assert to_openai(stored, use_native=False) == [
        {"role": "system", "content": "Rules."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": "No."},
    ]
    assert [m.role for m in stored] == ["system", "user", "assistant"]


async def test_to_openai_from_neutral_parts(alice: Scope) -> None:
    stored = await _store(
        alice,
        [
            NewMessage("user", [TextPart(text="see"), FilePart(url="https://x/doc.pdf")]),
            NewMessage(
                "assistant",
                [
                    ReasoningPart(text="hmm"),
                    TextPart(text="Done."),
                    ToolCallPart(id="c", name="f", arguments={"a": 1}),
                ],
            ),
            NewMessage("tool", [ToolResultPart(call_id="c", content="bad", is_error=True)]),
        ],
    )
    assert to_openai(stored) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "see"},
                {"type": "text", "text": "[file: https://x/doc.pdf]"},
            ],
        },
        {
            "role": "assistant",
            "content": "Done.",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "bad"},
    ]


async def test_tool_message_without_result_part_is_refused(alice: Scope) -> None:
    stored = await _store(alice, [NewMessage("tool", "orphan output")])
    with pytest.raises(InvalidInputError):
        to_openai(stored)
    with pytest.raises(InvalidInputError):
        to_anthropic(stored)


async def test_to_anthropic(alice: Scope) -> None:
    stored = await _store(alice, from_openai(OPENAI_CHAT, native=False))
    assert to_anthropic(stored) == {
        "system": "Be brief.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture, and what is the weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                    {"type": "text", "text": "[audio]"},
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                    },
                    {"type": "document", "source": {"type": "url", "url": "openai-file://file-abc123"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "A cat. Checking the weather."},
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Rome"}},
                    {"type": "tool_use", "id": "call_2", "name": "time", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_3", "name": "n", "input": {"arguments": "not json"}}
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_3", "content": "ok"}]},
            {"role": "assistant", "content": "Sunny at noon in Rome."},
            {"role": "user", "content": "Thanks!"},
        ],
    }


async def test_to_anthropic_merges_turns_and_uses_native(alice: Scope) -> None:
    thinking = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "t", "signature": "sig"},
            {"type": "text", "text": "answer"},
        ],
    }
    stored = await _store(
        alice,
        [
            NewMessage("user", "one"),
            NewMessage("user", "two"),
            NewMessage("assistant", "answer", native={"format": ANTHROPIC_FORMAT, "data": thinking}),
            NewMessage("tool", [ToolResultPart(call_id="t1", content="err", is_error=True)]),
        ],
    )
    assert to_anthropic(stored)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        thinking,
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "err", "is_error": True}],
        },
    ]
    assert "system" not in to_anthropic(stored)
    assert to_anthropic(stored, use_native=False)["messages"][1] == {"role": "assistant", "content": "answer"}


async def test_to_anthropic_takes_native_turns_without_content(alice: Scope) -> None:
    """A native turn whose content is None or left out is an empty turn, also where it merges
    with the turn before it; content of another kind is refused as an input error."""

    def native(data: dict[str, object]) -> dict[str, object]:
        return {"format": ANTHROPIC_FORMAT, "data": data}

    stored = await _store(
        alice,
        [
            NewMessage("assistant", "a", native=native({"role": "assistant", "content": None})),
            NewMessage("assistant", "b", native=native({"role": "assistant"})),
            NewMessage("user", "c", native=native({"role": "user", "content": None})),
        ],
    )
    assert to_anthropic(stored)["messages"] == [
        {"role": "assistant", "content": [{"type": "text", "text": ""}, {"type": "text", "text": ""}]},
        {"role": "user", "content": ""},
    ]
    odd = await _store(
        alice,
        [NewMessage("user", "d", native=native({"role": "user", "content": 5}))],
    )
    with pytest.raises(InvalidInputError, match="native content"):
        to_anthropic(odd)


@pytest.mark.parametrize(
    "bad",
    [
        [{"role": "robot", "content": "x"}],
        ["not a mapping"],
        [{"role": "tool", "content": "x"}],
        [{"role": "user", "content": [{"type": "video", "video": {}}]}],
        [{"role": "user", "content": [{"type": "image_url"}]}],
        [{"role": "user", "content": [{"type": "file", "file": {"file_data": "https://not-data"}}]}],
        [{"role": "user", "content": 42}],
        [{"role": "assistant", "content": "x", "tool_calls": [{"id": "c"}]}],
        [
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}],
            }
        ],
        # Kept as the native form, which holds only JSON: values with no JSON form are refused.
        [{"role": "user", "content": "x", "sent": datetime(2026, 1, 1, tzinfo=UTC)}],
        [{"role": "assistant", "content": "x", "audio": b"raw"}],
        [{"role": "system", "content": "x", "extra": object()}],
    ],
)
def test_from_openai_rejects_malformed_input(bad: list[Any]) -> None:
    with pytest.raises(InvalidInputError):
        from_openai(bad)


@pytest.mark.parametrize("bad", [None, 1, True, "user", b"x", {"role": "user", "content": "hi"}])
def test_from_openai_refuses_what_is_not_a_list(bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="messages: must be a list of messages"):
        from_openai(bad)
