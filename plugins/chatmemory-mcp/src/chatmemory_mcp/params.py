"""Tool parameter types, with the names models commonly guess accepted as aliases.

The input schema shows only the canonical name; the aliases are accepted silently.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from mcp.types import ToolAnnotations
from pydantic import AfterValidator, AliasChoices, Field, JsonValue, StringConstraints

from chatmemory import Role

__all__ = [
    "Agent",
    "Error",
    "FinishStatus",
    "MessageId",
    "Metadata",
    "ModelName",
    "NewestFirst",
    "RoleFilter",
    "SystemPrompts",
    "Title",
    "Usage",
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

# Hints left unset take the specification's defaults: not read-only, destructive, not idempotent.
READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
CREATE = ToolAnnotations(destructive_hint=False, open_world_hint=False)
UPDATE = ToolAnnotations(idempotent_hint=True, open_world_hint=False)
DESTROY = ToolAnnotations(open_world_hint=False)

_CONVERSATION = AliasChoices("conversation_id", "conversation", "conversationId", "chat_id")
_HISTORY = AliasChoices("history_id", "history", "historyId", "run_id")
_LIMIT = AliasChoices("limit", "page_size", "per_page", "max_results", "top_k", "n")
_CURSOR = AliasChoices("cursor", "next_cursor", "page_token", "after")

# Ids, cursors and page sizes say what they are by name and bounds; a description would only repeat it.
# Ids lose surrounding whitespace (models often copy one with a space or newline around it) and
# are spelled as tools return them, so what is echoed or put in a cursor matches later calls.
_ID = StringConstraints(strip_whitespace=True)


def _canonical(value: str | None) -> str | None:
    try:
        return value if value is None else str(UUID(value))
    except ValueError:
        return value  # the store refuses it, naming the argument


_SPELLED = AfterValidator(_canonical)
ConversationId = Annotated[
    str, _ID, _SPELLED, Field(min_length=1, max_length=100, validation_alias=_CONVERSATION)
]
OptionalConversationId = Annotated[
    str | None, _ID, _SPELLED, Field(max_length=100, validation_alias=_CONVERSATION)
]
HistoryId = Annotated[str, _ID, _SPELLED, Field(min_length=1, max_length=100, validation_alias=_HISTORY)]
OptionalHistoryId = Annotated[str | None, _ID, _SPELLED, Field(max_length=100, validation_alias=_HISTORY)]
Cursor = Annotated[
    str | None,
    Field(max_length=1000, validation_alias=_CURSOR, description="The previous page's `next_cursor`."),
]
ListLimit = Annotated[int, Field(ge=1, le=100, validation_alias=_LIMIT)]
MessageLimit = Annotated[int, Field(ge=1, le=100, validation_alias=_LIMIT)]
SearchLimit = Annotated[int, Field(ge=1, le=50, validation_alias=_LIMIT)]
ContentChars = Annotated[
    int,
    Field(
        ge=100,
        le=20_000,
        validation_alias=AliasChoices("max_chars", "max_length", "max_content_chars"),
        description="Characters kept per message (longer: clipped, `truncated`).",
    ),
]
MessageId = Annotated[
    str,
    _ID,
    _SPELLED,
    Field(min_length=1, max_length=100, validation_alias=AliasChoices("message_id", "message", "messageId")),
]
Title = Annotated[str | None, Field(max_length=200, description="A short title.")]
Metadata = Annotated[dict[str, JsonValue] | None, Field(description="Your own fields, as a JSON object.")]
Usage = Annotated[
    dict[str, JsonValue] | None,
    Field(description="Token counts and cost, e.g. {'input_tokens': 812}."),
]
Error = Annotated[str | None, Field(max_length=10_000, description="What went wrong, for failed runs.")]
FinishStatus = Annotated[Literal["completed", "failed", "cancelled"], Field(description="How the run ended.")]
ModelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        validation_alias=AliasChoices("model", "model_name", "llm"),
        description="The model driving the run, e.g. 'gpt-4.1'.",
    ),
]
Agent = Annotated[
    str | None,
    Field(
        max_length=200,
        validation_alias=AliasChoices("agent", "agent_name"),
        description="Your agent's name (kept in the run's metadata).",
    ),
]
SystemPrompts = Annotated[
    list[str] | None,
    Field(max_length=20, description="The run's system prompts, in order."),
]
NewestFirst = Annotated[bool, Field(description="true: start from the newest message (read the tail).")]
RoleFilter = Annotated[Role | None, Field(description="Only messages of this role.")]
