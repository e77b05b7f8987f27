"""Partial indexes of pinned conversations, so a listing reads its pinned part from an index.

A listing shows pinned conversations first, then the rest, each most recently updated
first. Both parts are read in index order: the rest from ``(owner_id, tenant_id,
updated_at)`` (or ``(tenant_id, updated_at)`` for an admin), the pinned ones from these, so a
page costs what it holds, not the number of the user's conversations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PINNED = sa.text("pinned_at IS NOT NULL")


def upgrade() -> None:
    for name, columns in (
        ("ix_chat_conversations_pinned_owner", ["owner_id", "tenant_id", "updated_at"]),
        ("ix_chat_conversations_pinned_tenant", ["tenant_id", "updated_at"]),
    ):
        op.create_index(
            op.f(name), "chat_conversations", columns, sqlite_where=_PINNED, postgresql_where=_PINNED
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_chat_conversations_pinned_tenant"), table_name="chat_conversations")
    op.drop_index(op.f("ix_chat_conversations_pinned_owner"), table_name="chat_conversations")
