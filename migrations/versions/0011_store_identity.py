"""Each database has an identity of its own, which change cursors carry.

A change cursor holds a position in the change log. Change ids start at 1 in every database,
so a cursor kept from another database (staging, a database rebuilt from an export) that is
behind this one's head named a position here too, and a watch resumed from it silently, with
changes that never followed what the client had. ``chat_store`` holds one row: a random id
the database makes when this migration runs. Cursors handed out since carry the beginning of
it, and a watch refuses a cursor that carries another database's. A copy of the file or a
restored backup keeps the identity, and with it the history its cursors name.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_store",
        sa.Column("id", sa.Integer(), autoincrement=False),
        sa.Column("store_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_chat_store_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_store")),
    )
    # Made by the database, so a script of this migration (``chatmemory migrate --sql``) run on
    # several databases gives each its own.
    sqlite = op.get_context().dialect.name == "sqlite"
    # (``gen_random_uuid()`` would need PostgreSQL 13.)
    made = (
        "lower(hex(randomblob(16)))"
        if sqlite
        else "md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text)::uuid"
    )
    op.execute(f"INSERT INTO chat_store (id, store_id) VALUES (1, {made})")


def downgrade() -> None:
    op.drop_table("chat_store")
