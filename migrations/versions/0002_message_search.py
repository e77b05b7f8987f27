"""Full-text search over message content.

Both backends keep the index in a table of its own, written by triggers inside the same
transaction as the message, so it can never be out of step. Every message is indexed,
soft-deleted ones too; searches drop those through their join to the live rows, and a
hard delete removes them from the index. The models in ``_schema`` do not describe these
tables (they differ per backend), so autogenerate leaves them alone.

SQLite: an external-content FTS5 table over ``chat_messages.content`` keyed by the
message's rowid. The ``unicode61`` tokenizer folds case and keeps diacritics, as
PostgreSQL does below. VACUUM keeps these rowids (SQLite copies rowid tables as they
are); should they ever drift, ``INSERT INTO chat_messages_fts(chat_messages_fts) VALUES
('rebuild')`` rebuilds the index.

PostgreSQL: ``chat_messages_search`` holds each message's ``tsvector`` under a GIN index.
The ``simple`` configuration lowercases words without stemming or stop words: messages are
in any language, and an English stemmer would mangle the rest while dropping words like
"the". (A generated column on ``chat_messages`` would do the same job, but would make the
two backends' ``chat_messages`` differ from the one model both share.)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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


_POSTGRESQL_UPGRADE = (
    "CREATE TABLE chat_messages_search ("
    "message_id UUID NOT NULL, search_vector TSVECTOR NOT NULL, "
    "CONSTRAINT pk_chat_messages_search PRIMARY KEY (message_id), "
    "CONSTRAINT fk_chat_messages_search_message_id_chat_messages FOREIGN KEY (message_id) "
    "REFERENCES chat_messages (id) ON DELETE CASCADE)",
    "CREATE INDEX ix_chat_messages_search_search_vector ON chat_messages_search USING gin (search_vector)",
    "CREATE FUNCTION chat_messages_search_sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO chat_messages_search (message_id, search_vector) "
    "VALUES (NEW.id, to_tsvector('simple'::regconfig, NEW.content)) "
    "ON CONFLICT (message_id) DO UPDATE SET search_vector = EXCLUDED.search_vector; "
    "RETURN NULL; END $$",
    "CREATE TRIGGER chat_messages_search_sync AFTER INSERT OR UPDATE OF content ON chat_messages "
    "FOR EACH ROW EXECUTE FUNCTION chat_messages_search_sync()",
    "INSERT INTO chat_messages_search (message_id, search_vector) "
    "SELECT id, to_tsvector('simple'::regconfig, content) FROM chat_messages",
)

_POSTGRESQL_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS chat_messages_search_sync ON chat_messages",
    "DROP FUNCTION IF EXISTS chat_messages_search_sync()",
    "DROP TABLE IF EXISTS chat_messages_search",
)


def upgrade() -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    for statement in _SQLITE_UPGRADE if sqlite else _POSTGRESQL_UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    for statement in _SQLITE_DOWNGRADE if sqlite else _POSTGRESQL_DOWNGRADE:
        op.execute(statement)
