"""The neutral form of each kind of Agents SDK item, and items rebuilt from neutral parts."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from chatmemory_openai_agents._items import content_of, item_identity, items_of, role_of

from chatmemory import (
    AudioPart,
    ContentPart,
    FilePart,
    ImagePart,
    Message,
    ReasoningPart,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)

PDF = base64.b64encode(b"%PDF-1.4 tiny").decode()
WAV = base64.b64encode(b"RIFF tiny").decode()


@pytest.mark.parametrize(
    ("item", "role", "content"),
    [
        ({"role": "developer", "content": "Rules."}, "system", "Rules."),
        (
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_file",
                        "file_data": f"data:application/pdf;base64,{PDF}",
                        "filename": "a.pdf",
                    },
                    {"type": "input_file", "file_id": "file-1"},
                    {"type": "input_image", "file_id": "file-2", "detail": "low"},
                    {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}},
                ],
            },
            "user",
            [
                FilePart(data=PDF, media_type="application/pdf", filename="a.pdf"),
                FilePart(url="openai-file:file-1"),
                ImagePart(url="openai-file:file-2"),
                AudioPart(data=WAV, media_type="audio/wav"),
            ],
        ),
        (
            {
                "type": "message",
                "role": "assistant",
                "id": "m1",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "Sure.", "annotations": []},
                    {"type": "refusal", "refusal": "Not that."},
                ],
            },
            "assistant",
            [TextPart(text="Sure."), TextPart(text="Not that.")],
        ),
        (
            {"type": "reasoning", "id": "r1", "summary": [{"type": "summary_text", "text": "Think."}]},
            "assistant",
            [ReasoningPart(text="Think.")],
        ),
        (
            {"type": "custom_tool_call", "call_id": "c9", "name": "patch", "input": "diff"},
            "assistant",
            [ToolCallPart(id="c9", name="patch", arguments="diff")],
        ),
        (
            {"type": "custom_tool_call_output", "call_id": "c9", "output": "applied"},
            "tool",
            [ToolResultPart(call_id="c9", content="applied")],
        ),
        (
            {
                "type": "function_call_output",
                "call_id": "c1",
                "output": [{"type": "input_text", "text": "5"}],
            },
            "tool",
            [ToolResultPart(call_id="c1", content="5")],
        ),
        (
            {"type": "web_search_call", "id": "ws1", "status": "completed", "action": {"query": "q"}},
            "assistant",
            [ToolCallPart(id="ws1", name="web_search_call", arguments={"action": {"query": "q"}})],
        ),
        (
            {"type": "mcp_approval_response", "approval_request_id": "ap1", "approve": False},
            "tool",
            [ToolResultPart(call_id="ap1", content="denied")],
        ),
    ],
)
def test_item_to_neutral_form(item: dict[str, Any], role: Role, content: str | list[ContentPart]) -> None:
    assert role_of(item) == role
    assert content_of(item) == content


def stored(role: Role, content: str, parts: list[ContentPart] | None = None) -> Message:
    now = datetime.now(UTC)
    return Message(
        id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        history_id=uuid.uuid4(),
        seq=1,
        role=role,
        content=content,
        parts=parts,
        created_at=now,
        updated_at=now,
    )


def test_parts_rebuild_into_input_items() -> None:
    user = stored(
        "user",
        "",
        [
            FilePart(data=PDF, media_type="application/pdf", filename="a.pdf"),
            FilePart(url="openai-file:file-1"),
            ImagePart(url="openai-file:file-2"),
            AudioPart(data=WAV, media_type="audio/wav"),
        ],
    )
    assert items_of(user) == [
        {
            "role": "user",
            "content": [
                {
                    "type": "input_file",
                    "file_data": f"data:application/pdf;base64,{PDF}",
                    "filename": "a.pdf",
                },
                {"type": "input_file", "file_id": "file-1"},
                {"type": "input_image", "file_id": "file-2", "detail": "auto"},
                {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}},
            ],
        }
    ]
    # Reasoning cannot go back to the model without its provider id; a tool message
    # without a call id has nothing to pair with.
    assert items_of(stored("assistant", "", [ReasoningPart(text="hmm")])) == []
    assert items_of(stored("tool", "orphan")) == []


def test_identity_matches_an_output_object_and_its_input_dict() -> None:
    class Output:
        type = "function_call"
        call_id = "c1"
        id = "fc_1"

    assert (
        item_identity(Output())
        == item_identity({"type": "function_call", "call_id": "c1"})
        == "function_call:c1"
    )
    assert item_identity({"role": "user", "content": "hi"}) is None
