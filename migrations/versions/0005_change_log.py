"""A change log that watchers read, in commit order.

``chat_changes`` holds one row per change a writing transaction made (an append of many
messages is one row naming its ``seq`` range). Rows live with their conversation: deleting
it for good removes them too. On SQLite ``id`` is an AUTOINCREMENT rowid (one writer, so ids
follow commit order). On PostgreSQL ids come from the one-row ``chat_change_clock``, which each
writing transaction updates as its last statement, so its row lock orders commits.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False),
        sa.Column("chat_conversation_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("history_id", sa.Uuid(), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("seq_count", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["chat_conversation_id"],
            ["chat_conversations.id"],
            name=op.f("fk_chat_changes_chat_conversation_id_chat_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_changes")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_chat_changes_chat_conversation_id_id"), "chat_changes", ["chat_conversation_id", "id"]
    )
    op.create_table(
        "chat_change_clock",
        sa.Column("id", sa.Integer(), autoincrement=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_chat_change_clock_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_change_clock")),
    )
    op.execute("INSERT INTO chat_change_clock (id, n) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("chat_change_clock")
    op.drop_index(op.f("ix_chat_changes_chat_conversation_id_id"), table_name="chat_changes")
    op.drop_table("chat_changes")
