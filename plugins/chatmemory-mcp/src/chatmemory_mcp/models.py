"""What the tools take and return. Every output is bounded: long text is clipped and flagged."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue

from chatmemory import Conversation, ConversationSummary, History, Message, Role
from chatmemory.content import ContentPart

__all__ = [
    "AppendResult",
    "ClientInfo",
    "ContextOut",
    "ConversationDetailOut",
    "ConversationOut",
    "ConversationPage",
    "Deleted",
    "HistoryOut",
    "MessageIn",
    "MessageOut",
    "MessagePage",
    "SearchHit",
    "SearchPage",
    "StoredMessage",
    "WhoAmI",
    "clip",
    "clip_json",
]

METADATA_CHARS = 2_000
"""Serialized size above which a metadata or usage object is left out (and flagged)."""
PROMPT_CHARS = 2_000
"""Characters kept of each system prompt."""
PREVIEW_CHARS = 200
"""Characters kept of a conversation's last-message preview."""


def clip(text: str | None, limit: int) -> tuple[str | None, bool]:
    """``text`` cut to ``limit`` characters, and whether anything was cut."""
    if text is None or len(text) <= limit:
        return text, False
    return text[:limit] + "…", True


def clip_json(value: dict[str, JsonValue] | None) -> tuple[dict[str, JsonValue] | None, bool]:
    """``value`` if its JSON fits in ``METADATA_CHARS``, else ``None``; and whether it was dropped."""
    if value is None or len(json.dumps(value, default=str)) <= METADATA_CHARS:
        return value, False
    return None, True


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ClientInfo(_Out):
    """The MCP client application, as it introduced itself."""

    name: str
    version: str | None = None


class WhoAmI(_Out):
    """The principal every call of this connection runs as."""

    principal_id: str
    tenant: str | None = None
    admin: bool = False
    auth: Literal["stdio", "token", "jwt", "insecure"] = Field(
        description="How the principal was set: fixed at start (stdio, insecure) or by a bearer token."
    )
    client: ClientInfo | None = None


class ConversationOut(_Out):
    """A conversation. ``truncated`` is true when some field was clipped or left out."""

    id: str
    owner_id: str
    title: str | None = None
    metadata: dict[str, JsonValue] | None = None
    pinned: bool = False
    archived: bool = False
    message_count: int | None = None
    last_message_preview: str | None = None
    created_at: datetime
    updated_at: datetime
    truncated: bool = False

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationOut:
        """The bounded view of a core conversation (or summary)."""
        metadata, cut = clip_json(conversation.metadata)
        count = preview = None
        if isinstance(conversation, ConversationSummary):
            count = conversation.message_count
            preview, cut_preview = clip(conversation.last_message_preview, PREVIEW_CHARS)
            cut = cut or cut_preview
        return cls(
            id=str(conversation.id),
            owner_id=conversation.owner_id,
            title=conversation.title,
            metadata=metadata,
            pinned=conversation.pinned,
            archived=conversation.archived,
            message_count=count,
            last_message_preview=preview,
            created_at=conversation.created_at,
            updated_at=conversation.updated_at,
            truncated=cut,
        )


class ConversationPage(_Out):
    """One page of conversations, pinned first, then most recently updated."""

    items: list[ConversationOut]
    next_cursor: str | None = Field(
        None, description="Pass back as `cursor` for the next page; null at the end."
    )
    has_more: bool = False


class HistoryOut(_Out):
    """One agent run: the model that drove it, its status and usage."""

    id: str
    conversation_id: str
    model: str
    status: Literal["running", "completed", "failed", "cancelled"]
    system_prompts: list[str] | None = None
    metadata: dict[str, JsonValue] | None = None
    usage: dict[str, JsonValue] | None = None
    error: str | None = None
    finished_at: datetime | None = None
    created_at: datetime
    truncated: bool = False

    @classmethod
    def of(cls, history: History) -> HistoryOut:
        """The bounded view of a core history."""
        metadata, cut_meta = clip_json(history.metadata)
        usage, cut_usage = clip_json(history.usage)
        error, cut_error = clip(history.error, PROMPT_CHARS)
        prompts = None
        cut_prompts = False
        if history.system_prompts is not None:
            clipped = [clip(p, PROMPT_CHARS) for p in history.system_prompts[:20]]
            prompts = [text or "" for text, _ in clipped]
            cut_prompts = len(history.system_prompts) > 20 or any(cut for _, cut in clipped)
        return cls(
            id=str(history.id),
            conversation_id=str(history.conversation_id),
            model=history.model,
            status=history.status,
            system_prompts=prompts,
            metadata=metadata,
            usage=usage,
            error=error,
            finished_at=history.finished_at,
            created_at=history.created_at,
            truncated=cut_meta or cut_usage or cut_error or cut_prompts,
        )


class ConversationDetailOut(_Out):
    """A conversation and one page of its histories, in the order they started."""

    conversation: ConversationOut
    histories: list[HistoryOut]
    next_cursor: str | None = Field(
        None, description="Pass back as `cursor` for the next page of histories; null at the end."
    )
    has_more: bool = False


class MessageOut(_Out):
    """A stored message. ``content`` is its plain text, clipped when ``truncated`` is true."""

    id: str
    conversation_id: str
    history_id: str
    seq: int
    role: Role
    content: str
    content_length: int = Field(description="Characters in the full content.")
    part_types: list[str] | None = Field(None, description="Types of the content parts, when not plain text.")
    model: str | None = None
    status: Literal["complete", "pending", "error"] = "complete"
    error: str | None = None
    key: str | None = None
    metadata: dict[str, JsonValue] | None = None
    created_at: datetime
    truncated: bool = False

    @classmethod
    def of(cls, message: Message, max_chars: int) -> MessageOut:
        """The view of a core message with content clipped to ``max_chars``."""
        content, cut = clip(message.content, max_chars)
        metadata, cut_meta = clip_json(message.metadata)
        error, cut_error = clip(message.error, PROMPT_CHARS)
        return cls(
            id=str(message.id),
            conversation_id=str(message.conversation_id),
            history_id=str(message.history_id),
            seq=message.seq,
            role=message.role,
            content=content or "",
            content_length=len(message.content),
            part_types=None if message.parts is None else [p.type for p in message.parts],
            model=message.model,
            status=message.status,
            error=error,
            key=message.key,
            metadata=metadata,
            created_at=message.created_at,
            truncated=cut or cut_meta or cut_error,
        )


class MessagePage(_Out):
    """One page of messages in ``seq`` order (newest first when asked)."""

    items: list[MessageOut]
    next_cursor: str | None = Field(
        None, description="Pass back as `cursor` for the next page; null at the end."
    )
    has_more: bool = False
    truncated: bool = Field(False, description="True when some message content was clipped.")


class MessageIn(BaseModel):
    """A message to append. ``key`` makes a retry safe: a key already stored is not added twice."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    role: Role
    content: str | list[ContentPart] = Field(
        validation_alias=AliasChoices("content", "text"),
        description="Plain text, or a list of content parts (text, image, audio, file, tool_call, ...).",
    )
    model: str | None = Field(
        None,
        description="Assistant messages only: the model that produced it (default: the history's model).",
    )
    usage: dict[str, JsonValue] | None = None
    metadata: dict[str, JsonValue] | None = None
    key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        validation_alias=AliasChoices("key", "idempotency_key", "client_message_id", "message_key"),
        description="Your id for this message, unique in the history; re-sending it never duplicates.",
    )

    def as_core(self) -> dict[str, Any]:
        """The mapping ``Scope.append_messages`` takes."""
        return self.model_dump(exclude_none=True, by_alias=False) | {"content": self.content}


class StoredMessage(_Out):
    """Where an appended message landed."""

    id: str
    seq: int
    role: Role
    key: str | None = None


class AppendResult(_Out):
    """The appended messages in the order given (a re-sent key returns the message already stored)."""

    history_id: str
    conversation_id: str
    messages: list[StoredMessage]


class Deleted(_Out):
    """Confirmation of a soft delete."""

    id: str
    deleted: bool = True


class SearchHit(_Out):
    """One search result: the message (content clipped), where it is, and an excerpt with «matches»."""

    message: MessageOut
    conversation_id: str
    conversation_title: str | None = None
    snippet: str
    rank: float = Field(description="Relevance, higher is better; compares hits of one search only.")
    truncated: bool = False


class SearchPage(_Out):
    """One page of search results, most relevant first."""

    items: list[SearchHit]
    next_cursor: str | None = Field(
        None, description="Pass back as `cursor` for the next page; null at the end."
    )
    has_more: bool = False
    truncated: bool = False


class ContextOut(_Out):
    """The latest complete messages of a conversation that fit a token budget, oldest first."""

    conversation_id: str
    messages: list[MessageOut]
    omitted: int = Field(description="Older messages left out; read them with list_messages if needed.")
    estimated_tokens: int = Field(
        description="Estimated tokens of `messages` (about 4 characters per token)."
    )
