"""The request bodies and query strings the API accepts, and the result shapes it adds.

Bodies are strict (``"5"`` is not a number, ``1`` is not ``true``) and closed (an unknown
field is an error naming it); the core re-checks every value and its limits. Query strings
are text by nature, so their numbers and flags are parsed from it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from chatmemory import ContentPart, Message, NewMessage

__all__ = [
    "AppendMessages",
    "AppendedMessages",
    "CompleteMessage",
    "ContextQuery",
    "DetailQuery",
    "FailMessage",
    "FinishHistory",
    "ListConversationsQuery",
    "ListMessagesQuery",
    "NewConversation",
    "NewHistory",
    "NoQuery",
    "SearchQuery",
    "UpdateConversation",
    "UpdateHistory",
    "WatchQuery",
    "Whoami",
]

JsonObject = dict[str, JsonValue]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NewConversation(_Body):
    """Start a conversation."""

    title: str | None = None
    metadata: JsonObject | None = None


class UpdateConversation(_Body):
    """Change what is given; a field left out stays as it is, ``title: null`` clears the title."""

    title: str | None = None
    metadata: JsonObject | None = None
    pinned: bool | None = None
    archived: bool | None = None


class NewHistory(_Body):
    """Start recording one agent run driven by ``model``."""

    model: str
    system_prompts: list[str] | None = None
    metadata: JsonObject | None = None


class UpdateHistory(_Body):
    """Change a running history; a field left out stays as it is."""

    model: str | None = None
    system_prompts: list[str] | None = None
    metadata: JsonObject | None = None


class FinishHistory(_Body):
    """Close a running history."""

    status: Literal["completed", "failed", "cancelled"] = "completed"
    usage: JsonObject | None = None
    error: str | None = None


class AppendMessages(_Body):
    """Messages to append, all or none; a message whose ``key`` is stored comes back instead of a copy."""

    messages: list[NewMessage] = Field(min_length=1)


class AppendedMessages(BaseModel):
    """The stored messages, in the order they were sent."""

    messages: list[Message]


class CompleteMessage(_Body):
    """Fill in a pending message."""

    content: str | list[ContentPart]
    model: str | None = None


class FailMessage(_Body):
    """Mark a pending message as failed."""

    error: str


class Whoami(BaseModel):
    """The principal the request's token stands for."""

    id: str
    tenant: str | None = None
    admin: bool = False


class NoQuery(_Query):
    """No parameters: an unknown one is refused, as on every route."""


class DetailQuery(_Query):
    """Whether to include messages."""

    messages: bool = False


class ListConversationsQuery(_Query):
    """A page of conversations; ``archived``: ``false`` (default), ``true`` or ``all``."""

    limit: int = 20
    cursor: str | None = None
    archived: Literal["false", "true", "all"] = "false"


class ListMessagesQuery(_Query):
    """A page of messages in ``seq`` order (``newest_first`` reverses it)."""

    limit: int = 50
    cursor: str | None = None
    newest_first: bool = False


class SearchQuery(_Query):
    """A full-text search of the caller's conversations."""

    q: str
    conversation_id: str | None = None
    history_id: str | None = None
    role: str | None = None
    limit: int = 20
    cursor: str | None = None


class ContextQuery(_Query):
    """The token budget of ``get_context``."""

    max_tokens: int = 4000
    max_messages: int | None = None


class WatchQuery(_Query):
    """Where a change stream resumes: after this event cursor (``Last-Event-ID`` also works for SSE)."""

    after: str | None = None
