"""What the tools take and return. Every output is bounded: long text is clipped and flagged."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic_core import to_json

from chatmemory import Conversation, ConversationSummary, History, Message, Role
from chatmemory.content import TextPart, ToolCallPart, ToolResultPart

__all__ = [
    "AppendResult",
    "ClientInfo",
    "ContextMessage",
    "ContextOut",
    "ConversationDetailOut",
    "ConversationOut",
    "ConversationPage",
    "Deleted",
    "ExportOut",
    "HistoryOut",
    "MessageOut",
    "MessagePage",
    "RunOut",
    "SearchHit",
    "SearchPage",
    "StoredMessage",
    "ToolCallOut",
    "WhoAmI",
    "clip",
    "clip_json",
    "wire",
    "wire_size",
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
    """``value`` if its JSON fits in ``METADATA_CHARS``, else ``None``; and whether it was dropped.

    An empty object is ``None`` too: left out of the result, as it says nothing.
    """
    if not value:
        return None, False
    if len(json.dumps(value, default=str)) <= METADATA_CHARS:
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


class ToolCallOut(_Out):
    """A tool call: the call id, the tool's name and its arguments as JSON text."""

    id: str
    name: str
    arguments: str


class _MessageView(_Out):
    id: str
    seq: int
    role: Role
    content: str
    model: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    tool_calls_omitted: int = 0
    tool_call_id: str | None = None
    is_error: bool = False
    part_types: list[str] | None = None
    truncated: bool = False

    @classmethod
    def _fields_of(cls, message: Message, max_chars: int) -> dict[str, Any]:
        content, cut = clip(message.content, max_chars)
        calls: list[ToolCallOut] = []
        results: list[ToolResultPart] = []
        others: list[str] = []
        # The tool calls share one allowance of ``max_chars`` (ids, names and arguments), as the
        # content has its own: however many calls a message makes, its view stays bounded. The
        # first call is always shown; calls past the allowance are left out and counted.
        room = max_chars
        left_out = 0
        for part in message.parts or ():
            if isinstance(part, ToolCallPart):
                label = len(part.id) + len(part.name)
                if calls and label >= room:
                    left_out += 1
                    continue
                arguments, cut_args = clip(_arguments_text(part.arguments), max(0, room - label))
                calls.append(ToolCallOut(id=part.id, name=part.name, arguments=arguments or ""))
                room -= label + len(arguments or "")
                cut = cut or cut_args
            elif isinstance(part, ToolResultPart):
                results.append(part)
            elif not isinstance(part, TextPart) and part.type not in others:
                others.append(part.type)  # each kind once: a message of many images stays small
        answered, cut_answered = clip(",".join(r.call_id for r in results), max_chars)
        return {
            "id": str(message.id),
            "seq": message.seq,
            "role": message.role,
            "content": content or "",
            "model": message.model,
            "tool_calls": calls or None,
            "tool_calls_omitted": left_out,
            "tool_call_id": answered or None,
            "is_error": any(r.is_error for r in results),
            "part_types": others or None,
            "truncated": cut or cut_answered or left_out > 0,
        }


class MessageOut(_MessageView):
    """A stored message. ``content`` is its plain text, clipped when ``truncated`` is true.

    An assistant's tool calls are in ``tool_calls``, within one ``max_chars`` allowance of their
    own (``tool_calls_omitted`` counts the calls past it); a tool message names the call it answers
    in ``tool_call_id`` (comma-separated when it answers several, clipped like the content);
    ``part_types`` names each other kind of part the message holds, once. ``content_length`` is the
    full length, given only when ``truncated`` is true.
    """

    conversation_id: str
    history_id: str
    content_length: int | None = None
    status: Literal["complete", "pending", "error"] = "complete"
    error: str | None = None
    key: str | None = None
    metadata: dict[str, JsonValue] | None = None
    created_at: datetime

    @classmethod
    def of(cls, message: Message, max_chars: int) -> MessageOut:
        """The view of a core message with content and tool arguments clipped to ``max_chars``."""
        fields = cls._fields_of(message, max_chars)
        metadata, cut_meta = clip_json(message.metadata)
        error, cut_error = clip(message.error, PROMPT_CHARS)
        fields |= {
            "conversation_id": str(message.conversation_id),
            "history_id": str(message.history_id),
            "status": message.status,
            "error": error,
            "key": message.key,
            "metadata": metadata,
            "created_at": message.created_at,
            "truncated": fields["truncated"] or cut_meta or cut_error,
        }
        if fields["truncated"]:
            fields["content_length"] = len(message.content)
        return cls(**fields)


class ContextMessage(_MessageView):
    """A message as ``get_context`` hands it to a model: what was said, by whom, with which tools.

    ``content_length`` is the full length, given only when ``truncated`` is true.
    """

    content_length: int | None = None

    @classmethod
    def of(cls, message: Message, max_chars: int) -> ContextMessage:
        """The lean view of a core message with content and tool arguments clipped to ``max_chars``."""
        fields = cls._fields_of(message, max_chars)
        length = len(message.content) if fields["truncated"] else None
        return cls(**fields, content_length=length)


def _arguments_text(arguments: str | dict[str, JsonValue]) -> str:
    return arguments if isinstance(arguments, str) else to_json(arguments).decode()


class MessagePage(_Out):
    """One page of messages in ``seq`` order (newest first when asked)."""

    items: list[MessageOut]
    next_cursor: str | None = Field(
        None, description="Pass back as `cursor` for the next page; null at the end."
    )
    has_more: bool = False
    truncated: bool = Field(False, description="True when some message content was clipped.")


class StoredMessage(_Out):
    """Where an appended message landed; ``deduplicated`` when its key was already stored."""

    id: str
    seq: int
    role: Role
    key: str | None = None
    deduplicated: bool = False


class AppendResult(_Out):
    """The appended messages in the order given (a re-sent key returns the message already stored)."""

    history_id: str
    conversation_id: str
    messages: list[StoredMessage]


class Deleted(_Out):
    """Confirmation of a soft delete."""

    id: str
    deleted: bool


class RunOut(_Out):
    """A recorded run: its conversation (``new_conversation`` when the call started it), the
    finished history and where each message landed."""

    conversation_id: str
    new_conversation: bool = False
    history: HistoryOut
    messages: list[StoredMessage]


class ExportOut(_Out):
    """A conversation's full export document (histories and messages), as ``chatmemory export`` writes it."""

    conversation_id: str
    bytes: int
    document: dict[str, JsonValue]


class SearchHit(_Out):
    """One search result: the message (content clipped, its conversation in ``conversation_id``), its
    conversation's title and an excerpt with «matches»."""

    message: MessageOut
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
    messages: list[ContextMessage]
    omitted: int = Field(description="Older messages left out; read them with list_messages if needed.")
    estimated_tokens: int = Field(description="Estimated tokens of this whole response (bytes / 4).")
    truncated: bool = Field(False, description="True when some message was clipped to fit.")


def wire(model: BaseModel) -> dict[str, Any]:
    """What a tool sends for ``model``: JSON data without null or default-valued fields."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)


def wire_size(model: BaseModel) -> int:
    """Bytes of ``model`` as a tool sends it (compact UTF-8 JSON of ``wire``)."""
    return len(to_json(wire(model)))
