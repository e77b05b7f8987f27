"""The public names are the contract: this pins them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import chatmemory
from chatmemory import errors

PUBLIC = [
    "AudioPart",
    "ChangeEvent",
    "ChangeKind",
    "ChatMemory",
    "ChatMemoryError",
    "ConflictError",
    "ContentPart",
    "Context",
    "Conversation",
    "ConversationDetail",
    "ConversationNotFound",
    "CorruptDataError",
    "ConversationSummary",
    "FilePart",
    "History",
    "HistoryDetail",
    "HistoryNotFound",
    "HistoryStatus",
    "ImagePart",
    "InvalidInputError",
    "Limits",
    "Message",
    "MessageHit",
    "MessageNotFound",
    "MessageStatus",
    "Native",
    "NewMessage",
    "NoPrincipalError",
    "NotFoundError",
    "Page",
    "Principal",
    "PurgeCounts",
    "RecordedRun",
    "ReasoningPart",
    "Role",
    "SchemaOutOfDateError",
    "Scope",
    "StorageError",
    "TextPart",
    "ToolCallPart",
    "ToolResultPart",
    "flatten_content",
    "use_principal",
]


def test_all_is_the_contract() -> None:
    assert sorted(chatmemory.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(chatmemory, name) is not None


def test_error_tree() -> None:
    assert issubclass(errors.NotFoundError, errors.ChatMemoryError)
    assert issubclass(errors.NotFoundError, LookupError)
    for cls in (errors.ConversationNotFound, errors.HistoryNotFound, errors.MessageNotFound):
        assert issubclass(cls, errors.NotFoundError)
    assert issubclass(errors.InvalidInputError, ValueError)
    for cls in (
        errors.ConflictError,
        errors.NoPrincipalError,
        errors.SchemaOutOfDateError,
        errors.StorageError,
    ):
        assert issubclass(cls, errors.ChatMemoryError)
    assert issubclass(errors.CorruptDataError, errors.StorageError)
    assert set(errors.__all__) <= set(chatmemory.__all__)


def test_not_found_errors_carry_the_id() -> None:
    err = errors.ConversationNotFound("abc")
    assert err.conversation_id == "abc"
    assert str(err) == "conversation abc not found"
    assert errors.HistoryNotFound("h").history_id == "h"
    assert errors.MessageNotFound("m").message_id == "m"


def test_models_are_frozen() -> None:
    msg = chatmemory.NewMessage("user", "hi")
    with pytest.raises(ValidationError, match="frozen"):
        msg.content = "changed"  # type: ignore[misc]


def test_flatten_content() -> None:
    parts = [
        {"type": "text", "text": "a"},
        {"type": "image", "url": "https://x/y.png"},
        {"type": "tool_call", "id": "c1", "name": "f", "arguments": {"x": 1}},
        {"type": "tool_result", "call_id": "c1", "content": "b"},
        {"type": "reasoning", "text": "hidden"},
    ]
    assert chatmemory.flatten_content(parts) == "a\nb"
    assert chatmemory.flatten_content("plain") == "plain"
