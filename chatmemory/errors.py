"""The exceptions chatmemory raises.

```
ChatMemoryError
├── NotFoundError (LookupError)
│   ├── ConversationNotFound
│   ├── HistoryNotFound
│   └── MessageNotFound
├── InvalidInputError (ValueError)
├── ConflictError
├── NoPrincipalError
├── SchemaOutOfDateError
└── StorageError
    └── CorruptDataError
```

An object that exists but belongs to someone else raises exactly the same error, with the
same message, as one that does not exist.
"""

from __future__ import annotations

from uuid import UUID

__all__ = [
    "ChatMemoryError",
    "ConflictError",
    "ConversationNotFound",
    "CorruptDataError",
    "HistoryNotFound",
    "InvalidInputError",
    "MessageNotFound",
    "NoPrincipalError",
    "NotFoundError",
    "SchemaOutOfDateError",
    "StorageError",
]


class ChatMemoryError(Exception):
    """Base class of every error chatmemory raises."""


class NotFoundError(ChatMemoryError, LookupError):
    """The object does not exist, was deleted, or is not visible to the principal."""

    kind = "object"

    def __init__(self, object_id: UUID | str) -> None:
        self.object_id = object_id
        super().__init__(f"{self.kind} {object_id} not found")


class ConversationNotFound(NotFoundError):
    """No visible conversation has this id."""

    kind = "conversation"

    @property
    def conversation_id(self) -> UUID | str:
        return self.object_id


class HistoryNotFound(NotFoundError):
    """No visible history has this id."""

    kind = "history"

    @property
    def history_id(self) -> UUID | str:
        return self.object_id


class MessageNotFound(NotFoundError):
    """No visible message has this id."""

    kind = "message"

    @property
    def message_id(self) -> UUID | str:
        return self.object_id


class InvalidInputError(ChatMemoryError, ValueError):
    """An argument was rejected; nothing was written.

    Attributes:
        field: dotted path of the offending argument (``"messages.0.role"``), if known.
        reason: what is wrong with it.
    """

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid {field}: {reason}" if field else f"invalid input: {reason}")


class ConflictError(ChatMemoryError):
    """The operation does not fit the object's current state (e.g. appending to a finished history)."""


class NoPrincipalError(ChatMemoryError):
    """An operation needed a principal and none was given or set with ``use_principal``."""

    def __init__(self) -> None:
        super().__init__("no principal: pass one to memory.scoped(...) or set it with use_principal(...)")


class SchemaOutOfDateError(ChatMemoryError):
    """The database schema is not at the version this chatmemory needs.

    ``newer`` when the database is at a revision this chatmemory does not know: a newer
    chatmemory migrated it, and only upgrading chatmemory (not migrating) lets this one open it.
    ``read_only`` when migrating was refused because the database is read-only where it was
    opened (a SQLite file opened read-only, a PostgreSQL standby): it has to be migrated where
    it can be written.
    """

    def __init__(
        self, current: str | None, head: str, command: str, *, newer: bool = False, read_only: bool = False
    ) -> None:
        self.current = current
        self.head = head
        self.command = command
        self.newer = newer
        self.read_only = read_only
        if newer:
            message = (
                f"database schema is at revision {current}, which this chatmemory (at {head}) does "
                "not know: a newer chatmemory migrated it; upgrade chatmemory to use this database"
            )
        elif read_only:
            message = (
                f"database schema is at revision {current or '<none>'}, chatmemory needs {head}, and "
                f"the database is read-only here, so it cannot be migrated: run `{command}` where it "
                "can be written (or open it once with write access), then open it read-only again"
            )
        else:
            message = (
                f"database schema is at revision {current or '<none>'}, chatmemory needs {head}; "
                f"run `{command}` (or open with migrate=True)"
            )
        super().__init__(message)


class StorageError(ChatMemoryError):
    """The database failed (connection lost, disk full, lock timeout, ...), or (``CorruptDataError``)
    a read met a stored value chatmemory did not write. The call changed nothing, but in one case
    no client can rule out: a PostgreSQL connection lost (or ended by a close that timed out)
    after a write's commit was sent, when the server may have committed it. Re-sending an append
    whose messages carry keys is safe either way."""


class CorruptDataError(StorageError):
    """A read met a stored value chatmemory did not write: malformed JSON or text, a time or id
    that does not parse, a value of another type or shape (another program's, or a hand-made
    edit). Retrying reads it again: mend or delete the row. Raised by reads, and by a write that
    answers with messages it found stored (an append's keyed messages stored before), once its
    own changes are committed.
    """
