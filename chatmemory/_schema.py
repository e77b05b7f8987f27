"""The tables. Migrations in ``migrations/`` create exactly this; a test checks they agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> Any:
    # Plain JSON (text) rather than JSONB on PostgreSQL: nothing queries inside these
    # documents, and text gives back exactly what was stored (JSONB turns 1e23 into an int).
    # SQL NULL for None, so reading an absent value parses nothing.
    return JSON(none_as_null=True)


def _one_of(column: str, *values: str) -> str:
    """A CHECK that ``column`` is one of ``values``, as comparisons joined by ``OR``.

    The same test as ``column IN (...)``, which SQLite evaluates by building a temporary index of
    the list on every row it writes: two such checks were over a third of what writing a batch of
    messages cost SQLite (migration 0009).
    """
    return " OR ".join(f"{column} = '{value}'" for value in values)


def _timestamps() -> list[Column[Any]]:
    return [
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Column("deleted_at", UTCDateTime(), nullable=True),
    ]


conversations = Table(
    "chat_conversations",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("owner_id", String(255), nullable=False),
    Column("tenant_id", String(255), nullable=True),
    Column("title", Text(), nullable=True),
    Column("metadata", _json(), nullable=False),
    Column("pinned_at", UTCDateTime(), nullable=True),
    Column("archived_at", UTCDateTime(), nullable=True),
    # Denormalized so listing needs no query per conversation; kept in step by every write.
    Column("last_seq", BigInteger(), nullable=False),
    Column("message_count", Integer(), nullable=False),
    Column("last_message_preview", Text(), nullable=True),
    *_timestamps(),
    Index(None, "owner_id", "tenant_id", "updated_at"),
    Index(None, "tenant_id", "updated_at"),
    # Pinned conversations listed first, each part of a listing read in index order.
    Index(
        "ix_chat_conversations_pinned_owner",
        "owner_id",
        "tenant_id",
        "updated_at",
        sqlite_where=text("pinned_at IS NOT NULL"),
        postgresql_where=text("pinned_at IS NOT NULL"),
    ),
    Index(
        "ix_chat_conversations_pinned_tenant",
        "tenant_id",
        "updated_at",
        sqlite_where=text("pinned_at IS NOT NULL"),
        postgresql_where=text("pinned_at IS NOT NULL"),
    ),
)

histories = Table(
    "chat_histories",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column(
        "chat_conversation_id",
        Uuid(),
        ForeignKey("chat_conversations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("model", String(200), nullable=False),
    Column("system_prompts", _json(), nullable=True),
    Column("metadata", _json(), nullable=True),
    Column("status", String(16), nullable=False),
    Column("usage", _json(), nullable=True),
    Column("error", Text(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    *_timestamps(),
    CheckConstraint(_one_of("status", "running", "completed", "failed", "cancelled"), name="status"),
)

messages = Table(
    "chat_messages",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column(
        "chat_conversation_id",
        Uuid(),
        ForeignKey("chat_conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "chat_history_id",
        Uuid(),
        ForeignKey("chat_histories.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", BigInteger(), nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text(), nullable=False),
    Column("parts", _json(), nullable=True),
    Column("model", String(200), nullable=True),
    Column("status", String(16), nullable=False),
    Column("error", Text(), nullable=True),
    Column("usage", _json(), nullable=True),
    Column("metadata", _json(), nullable=True),
    Column("native", _json(), nullable=True),
    Column("key", String(255), nullable=True),
    *_timestamps(),
    UniqueConstraint("chat_conversation_id", "seq"),
    Index(None, "chat_history_id", "created_at"),
    Index(None, "chat_history_id", "seq"),
    # A key is unique among a history's live messages; once deleted, it may be sent again.
    # Messages without a key stay out of the index (migration 0007).
    Index(
        None,
        "chat_history_id",
        "key",
        unique=True,
        sqlite_where=text("key IS NOT NULL AND deleted_at IS NULL"),
        postgresql_where=text("key IS NOT NULL AND deleted_at IS NULL"),
    ),
    CheckConstraint(_one_of("role", "system", "user", "assistant", "tool"), name="role"),
    CheckConstraint(_one_of("status", "complete", "pending", "error"), name="status"),
)

# The change log that watchers read. On SQLite ``id`` is an AUTOINCREMENT rowid: one writer at a
# time, so ids follow commit order and a deleted greatest id is never handed out again. On
# PostgreSQL ids come from ``chat_change_clock``, updated last in each writing transaction: its
# row lock orders the commits, which a sequence would not (a lower value may commit later).
changes = Table(
    "chat_changes",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False),
    Column(
        "chat_conversation_id",
        Uuid(),
        ForeignKey("chat_conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", String(32), nullable=False),
    Column("history_id", Uuid(), nullable=True),
    Column("message_id", Uuid(), nullable=True),
    # Message changes name ``seq_count`` messages from ``seq`` on (an append of many is one row).
    Column("seq", BigInteger(), nullable=True),
    Column("seq_count", Integer(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "chat_conversation_id", "id"),
    sqlite_autoincrement=True,
)

change_clock = Table(
    "chat_change_clock",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
    Column("n", BigInteger(), nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)

store = Table(
    "chat_store",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
    Column("store_id", Uuid(), nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)
"""One row: this database's identity, made by migration 0011; change cursors carry it."""
