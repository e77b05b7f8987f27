"""chatmemory: the persisted record of AI conversations for Python agents.

A conversation groups histories (one per agent run, with the model that drove it), and
each history holds its ordered messages. Every operation runs as a ``Principal``.
"""

from __future__ import annotations

from chatmemory._context import Context
from chatmemory._purge import PurgeCounts
from chatmemory._runs import RecordedRun
from chatmemory._search import MessageHit
from chatmemory.content import (
    AudioPart,
    ContentPart,
    FilePart,
    ImagePart,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    flatten_content,
)
from chatmemory.errors import (
    ChatMemoryError,
    ConflictError,
    ConversationNotFound,
    CorruptDataError,
    HistoryNotFound,
    InvalidInputError,
    MessageNotFound,
    NoPrincipalError,
    NotFoundError,
    SchemaOutOfDateError,
    StorageError,
)
from chatmemory.limits import Limits
from chatmemory.memory import ChatMemory
from chatmemory.models import (
    ChangeEvent,
    ChangeKind,
    Conversation,
    ConversationDetail,
    ConversationSummary,
    History,
    HistoryDetail,
    HistoryStatus,
    Message,
    MessageStatus,
    Native,
    NewMessage,
    Page,
    Role,
)
from chatmemory.principal import Principal, use_principal
from chatmemory.scope import Scope

__version__ = "0.1.0"

__all__ = [
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
