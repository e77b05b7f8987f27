"""Full-text search over message content.

SQLite: an external-content FTS5 table over ``chat_messages.content`` keyed by the
table's rowid, kept in step by triggers in the writing transaction. Every row is indexed,
soft-deleted ones too; searches drop those through the join, and a hard delete removes
them. The ``unicode61`` tokenizer folds case and keeps diacritics, like PostgreSQL below.
VACUUM keeps these rowids (SQLite copies rowid tables as they are); should they ever
drift, ``INSERT INTO chat_messages_fts(chat_messages_fts) VALUES ('rebuild')`` restores
the index.

PostgreSQL: a stored generated ``tsvector`` column and a GIN index. The ``simple``
configuration lowercases words without stemming or stop words: messages are in any
language, and an English stemmer would mangle the rest while dropping words like "the".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same text as ``_schema.SEARCH_VECTOR`` so autogenerate sees no difference.
_VECTOR = "to_tsvector('simple'::regconfig, content)"

_SQLITE_UPGRADE = (
    "CREATE VIRTUAL TABLE chat_messages_fts USING fts5("
    "content, content='chat_messages', content_rowid='rowid', "
    "tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER chat_messages_fts_insert AFTER INSERT ON chat_messages BEGIN "
    "INSERT INTO chat_messages_fts (rowid, content) VALUES (new.rowid, new.content); END",
    "CREATE TRIGGER chat_messages_fts_delete AFTER DELETE ON chat_messages BEGIN "
    "INSERT INTO chat_messages_fts (chat_messages_fts, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); END",
    "CREATE TRIGGER chat_messages_fts_update AFTER UPDATE OF content ON chat_messages BEGIN "
    "INSERT INTO chat_messages_fts (chat_messages_fts, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); "
    "INSERT INTO chat_messages_fts (rowid, content) VALUES (new.rowid, new.content); END",
    "INSERT INTO chat_messages_fts (chat_messages_fts) VALUES ('rebuild')",
)

_SQLITE_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS chat_messages_fts_update",
    "DROP TRIGGER IF EXISTS chat_messages_fts_delete",
    "DROP TRIGGER IF EXISTS chat_messages_fts_insert",
    "DROP TABLE IF EXISTS chat_messages_fts",
)


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for statement in _SQLITE_UPGRADE:
            op.execute(statement)
        return
    op.add_column(
        "chat_messages",
        sa.Column(
            "search_vector", postgresql.TSVECTOR(), sa.Computed(_VECTOR, persisted=True), nullable=True
        ),
    )
    op.create_index(
        op.f("ix_chat_messages_search_vector"),
        "chat_messages",
        ["search_vector"],
        postgresql_using="gin",
    )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for statement in _SQLITE_DOWNGRADE:
            op.execute(statement)
        return
    op.drop_index(op.f("ix_chat_messages_search_vector"), table_name="chat_messages")
    op.drop_column("chat_messages", "search_vector")
