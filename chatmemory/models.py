"""The public data models. All are frozen; ORM rows never leave the package."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, Literal, TypeAlias, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from chatmemory._validation import MODEL_CHARS, check_json, check_text, invalid_input
from chatmemory.content import ContentPart, flatten_content, parse_parts
from chatmemory.errors import InvalidInputError

__all__ = [
    "ChangeEvent",
    "ChangeKind",
    "Conversation",
    "ConversationDetail",
    "ConversationSummary",
    "History",
    "HistoryDetail",
    "HistoryStatus",
    "Message",
    "MessageStatus",
    "Native",
    "NewMessage",
    "Page",
    "Role",
]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
MessageStatus: TypeAlias = Literal["complete", "pending", "error"]
HistoryStatus: TypeAlias = Literal["running", "completed", "failed", "cancelled"]
ChangeKind: TypeAlias = Literal[
    "conversation.created",
    "conversation.updated",
    "conversation.deleted",
    "history.started",
    "history.updated",
    "history.finished",
    "history.deleted",
    "message.appended",
    "message.completed",
    "message.failed",
    "message.deleted",
]

T = TypeVar("T")

_ROLES = frozenset(("system", "user", "assistant", "tool"))
# A model's four slots, set through their descriptors: what validation or ``model_construct``
# leaves in them, without its per-field work or the lookups of ``object.__setattr__``.
set_dict, set_fields_set, set_extra, set_private = (
    vars(BaseModel)[slot].__set__
    for slot in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class _Input(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Native(_Input):
    """A framework's own serialized message, returned to that framework exactly as stored."""

    format: str = Field(min_length=1, max_length=100)
    data: JsonValue


class NewMessage(_Input):
    """A message to append.

    ``content`` is a string or a list of content parts; ``model`` is only for assistant
    messages (it defaults to the history's model). A mapping with the same keys is
    accepted wherever a ``NewMessage`` is.

    Raises:
        InvalidInputError: on construction, when a field is malformed.
    """

    role: Role
    content: str | list[ContentPart]
    model: str | None = Field(default=None, min_length=1, max_length=MODEL_CHARS)
    status: MessageStatus = "complete"
    usage: dict[str, JsonValue] | None = None
    metadata: dict[str, JsonValue] | None = None
    native: Native | None = None
    key: str | None = Field(default=None, min_length=1, max_length=255)

    def __init__(self, role: Role | None = None, content: Any = None, /, **data: Any) -> None:
        if (
            not data
            and type(content) is str
            and type(role) is str
            and role in _ROLES
            and type(self) is NewMessage
        ):
            # ``NewMessage(role, text)``, the common case (a subclass's own fields, validators and
            # checks are validation's to apply): what validation would store, built
            # directly in half its time (``test_validation`` checks that the two agree).
            check_text("content", content)
            set_dict(self, {"role": role, "content": content, **_PLAIN})
            set_fields_set(self, {"role", "content"})
            set_extra(self, None)
            set_private(self, None)
            return
        if role is not None:
            data["role"] = role
        if content is not None:
            data["content"] = content
        try:
            # What ``BaseModel.__init__`` does, without its frame: a message is built per item.
            self.__pydantic_validator__.validate_python(data, self_instance=self)
        except ValidationError as exc:
            raise invalid_input(exc) from None
        self._check()

    def _check(self) -> None:
        # Runs after pydantic, so these errors name their field directly.
        model, content = self.model, self.content
        if model is not None and self.role != "assistant":
            raise InvalidInputError(
                "model", f"a {self.role} message has no model; only assistant messages do"
            )
        if isinstance(content, str):
            check_text("content", content)
        else:
            check_json("content", [part.model_dump(exclude_none=True) for part in content])
        # Most messages have none of these: each checked only when given.
        if self.usage is not None:
            check_json("usage", self.usage)
        if self.metadata is not None:
            check_json("metadata", self.metadata)
        if self.key is not None:
            check_text("key", self.key)
        if model is not None:
            check_text("model", model)
        if self.native is not None:
            check_text("native.format", self.native.format)
            check_json("native.data", self.native.data)

    @property
    def text(self) -> str:
        """The flattened plain text of ``content``."""
        return flatten_content(self.content)

    @property
    def parts(self) -> list[ContentPart] | None:
        """The content parts, or ``None`` when ``content`` is a plain string."""
        return None if isinstance(self.content, str) else self.content

    @classmethod
    def parse(cls, value: NewMessage | Mapping[str, Any], field: str = "message") -> NewMessage:
        """Accept a ``NewMessage`` or a mapping with its keys.

        Raises:
            InvalidInputError: the value is malformed.
        """
        if isinstance(value, NewMessage):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInputError(field, "must be a NewMessage or a mapping")
        if not all(isinstance(k, str) for k in value):
            raise InvalidInputError(field, "keys must be strings")
        try:
            return cls(**value)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{field}.{exc.field}" if exc.field else field, exc.reason) from None


_PLAIN = {
    name: field.default for name, field in NewMessage.model_fields.items() if name not in ("role", "content")
}


class Message(_Frozen):
    """A stored message. ``seq`` orders a conversation's messages totally."""

    id: UUID
    conversation_id: UUID
    history_id: UUID
    seq: int
    role: Role
    content: str
    parts: list[ContentPart] | None = None
    model: str | None = None
    status: MessageStatus = "complete"
    error: str | None = None
    usage: dict[str, JsonValue] | None = None
    metadata: dict[str, JsonValue] | None = None
    native: Native | None = None
    key: str | None = None
    created_at: datetime
    updated_at: datetime


class Conversation(_Frozen):
    """A conversation: one owner's group of histories."""

    id: UUID
    owner_id: str
    tenant_id: str | None = None
    title: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    pinned_at: datetime | None = None
    archived_at: datetime | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def pinned(self) -> bool:
        return self.pinned_at is not None

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


class ConversationSummary(Conversation):
    """A conversation as listed: with its live message count and the start of its last message."""

    message_count: int = 0
    last_message_preview: str | None = None


class History(_Frozen):
    """One agent run in a conversation, with the model that drove it."""

    id: UUID
    conversation_id: UUID
    model: str
    system_prompts: list[str] | None = None
    metadata: dict[str, JsonValue] | None = None
    status: HistoryStatus = "running"
    usage: dict[str, JsonValue] | None = None
    error: str | None = None
    finished_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class HistoryDetail(History):
    """A history with its messages in order (``None`` when not requested)."""

    messages: list[Message] | None = None


class ConversationDetail(ConversationSummary):
    """A conversation with its histories in the order they started."""

    histories: list[HistoryDetail] = Field(default_factory=list)


class Page(_Frozen, Generic[T]):
    """One page of a listing. Pass ``next_cursor`` back as ``cursor`` for the next page."""

    items: list[T]
    next_cursor: str | None = None
    has_more: bool = False


class ChangeEvent(_Frozen):
    """One committed change, as ``Scope.watch`` yields it.

    ``cursor`` is opaque: pass it back as ``watch(after=...)`` to get exactly the changes
    after this one. ``at`` is when the change was written. Message events name one message
    (``message_id``, ``seq``) and carry it as it is stored when the event is read (``None``
    for ``message.deleted``, or once it is deleted or purged); history events name
    ``history_id``.
    """

    kind: ChangeKind
    conversation_id: UUID
    cursor: str
    history_id: UUID | None = None
    message_id: UUID | None = None
    seq: int | None = None
    at: datetime
    message: Message | None = None


def parse_content(value: object, field: str = "content") -> str | list[ContentPart]:
    """A string, or a validated list of content parts.

    Raises:
        InvalidInputError: the value is neither.
    """
    if isinstance(value, str):
        return check_text(field, value)
    parts = parse_parts(value, field)
    check_json(field, [part.model_dump(exclude_none=True) for part in parts])
    return parts
