"""Initial schema: conversations, histories, messages.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON()


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "chat_conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.String(255), nullable=False),
        sa.Column("tenant_id", sa.String(255), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("last_message_preview", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_conversations")),
    )
    op.create_index(
        op.f("ix_chat_conversations_owner_id_tenant_id_updated_at"),
        "chat_conversations",
        ["owner_id", "tenant_id", "updated_at"],
    )
    op.create_index(
        op.f("ix_chat_conversations_tenant_id_updated_at"), "chat_conversations", ["tenant_id", "updated_at"]
    )

    op.create_table(
        "chat_histories",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("chat_conversation_id", sa.Uuid(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("system_prompts", _json(), nullable=True),
        sa.Column("metadata", _json(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("usage", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'cancelled')", name=op.f("ck_chat_histories_status")
        ),
        sa.ForeignKeyConstraint(
            ["chat_conversation_id"],
            ["chat_conversations.id"],
            name=op.f("fk_chat_histories_chat_conversation_id_chat_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_histories")),
    )
    op.create_index(
        op.f("ix_chat_histories_chat_conversation_id"), "chat_histories", ["chat_conversation_id"]
    )

    op.create_table(
        "chat_messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("chat_conversation_id", sa.Uuid(), nullable=False),
        sa.Column("chat_history_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("parts", _json(), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("usage", _json(), nullable=True),
        sa.Column("metadata", _json(), nullable=True),
        sa.Column("native", _json(), nullable=True),
        sa.Column("key", sa.String(255), nullable=True),
        *_timestamps(),
        sa.CheckConstraint(
            "role IN ('system', 'user', 'assistant', 'tool')", name=op.f("ck_chat_messages_role")
        ),
        sa.CheckConstraint(
            "status IN ('complete', 'pending', 'error')", name=op.f("ck_chat_messages_status")
        ),
        sa.ForeignKeyConstraint(
            ["chat_conversation_id"],
            ["chat_conversations.id"],
            name=op.f("fk_chat_messages_chat_conversation_id_chat_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["chat_history_id"],
            ["chat_histories.id"],
            name=op.f("fk_chat_messages_chat_history_id_chat_histories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
        sa.UniqueConstraint(
            "chat_conversation_id", "seq", name=op.f("uq_chat_messages_chat_conversation_id_seq")
        ),
    )
    op.create_index(
        op.f("ix_chat_messages_chat_history_id_created_at"),
        "chat_messages",
        ["chat_history_id", "created_at"],
    )
    op.create_index(op.f("ix_chat_messages_chat_history_id_seq"), "chat_messages", ["chat_history_id", "seq"])
    op.create_index(
        op.f("ix_chat_messages_chat_history_id_key"),
        "chat_messages",
        ["chat_history_id", "key"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("chat_messages")
    op.drop_table("chat_histories")
    op.drop_table("chat_conversations")
