"""The index that keeps idempotency keys unique holds only messages that have a key.

It held every live message, keyed or not (``(chat_history_id, NULL)`` for most), so every
append wrote one more index entry, and about one more page per commit, for nothing: NULLs
never collide in a unique index. It now holds the live messages with a key, which is all the
key lookup reads. Uniqueness is unchanged.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_chat_messages_chat_history_id_key"


def _create(where: str) -> None:
    op.create_index(
        op.f(_NAME),
        "chat_messages",
        ["chat_history_id", "key"],
        unique=True,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    op.drop_index(op.f(_NAME), table_name="chat_messages")
    _create("key IS NOT NULL AND deleted_at IS NULL")


def downgrade() -> None:
    op.drop_index(op.f(_NAME), table_name="chat_messages")
    _create("deleted_at IS NULL")
