"""Tool parameter types, with the names models commonly guess accepted as aliases.

The input schema shows only the canonical name; the aliases are accepted silently.
"""

from __future__ import annotations

from typing import Annotated

from mcp.types import ToolAnnotations
from pydantic import AliasChoices, Field

__all__ = [
    "READ",
    "CREATE",
    "UPDATE",
    "DESTROY",
    "ContentChars",
    "ConversationId",
    "Cursor",
    "HistoryId",
    "ListLimit",
    "MessageLimit",
    "OptionalConversationId",
    "OptionalHistoryId",
    "SearchLimit",
]

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
CREATE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
UPDATE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
DESTROY = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
)

_CONVERSATION = AliasChoices("conversation_id", "conversation", "conversationId", "chat_id")
_HISTORY = AliasChoices("history_id", "history", "historyId", "run_id")
_LIMIT = AliasChoices("limit", "page_size", "per_page", "max_results", "top_k", "n")
_CURSOR = AliasChoices("cursor", "next_cursor", "page_token", "after")

ConversationId = Annotated[
    str, Field(min_length=1, max_length=100, validation_alias=_CONVERSATION, description="A conversation id.")
]
OptionalConversationId = Annotated[
    str | None, Field(max_length=100, validation_alias=_CONVERSATION, description="A conversation id.")
]
HistoryId = Annotated[
    str, Field(min_length=1, max_length=100, validation_alias=_HISTORY, description="A history (run) id.")
]
OptionalHistoryId = Annotated[
    str | None, Field(max_length=100, validation_alias=_HISTORY, description="A history (run) id.")
]
Cursor = Annotated[
    str | None,
    Field(
        max_length=1000,
        validation_alias=_CURSOR,
        description="`next_cursor` from the previous page; omit for the first page.",
    ),
]
ListLimit = Annotated[int, Field(ge=1, le=100, validation_alias=_LIMIT, description="Page size (1-100).")]
MessageLimit = Annotated[int, Field(ge=1, le=100, validation_alias=_LIMIT, description="Page size (1-100).")]
SearchLimit = Annotated[int, Field(ge=1, le=50, validation_alias=_LIMIT, description="Page size (1-50).")]
ContentChars = Annotated[
    int,
    Field(
        ge=100,
        le=20_000,
        validation_alias=AliasChoices("max_chars", "max_length", "max_content_chars"),
        description="Characters kept per message; longer content is clipped and flagged `truncated`.",
    ),
]
