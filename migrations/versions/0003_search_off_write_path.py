"""Search indexes tool calls too, and SQLite indexes at search time instead of on every insert.

What is indexed is a message's *search text*: its content, then the name and arguments of
each of its tool calls, so a search for a tool's name or an argument finds the call.

SQLite: ``chat_messages_fts`` becomes an FTS5 table holding its own copy of each message's
search text (keyed by the message's rowid), no longer written by an insert trigger. A search
first indexes, in one batch, the messages past ``chat_search_state.indexed_rowid`` and moves
that mark to the newest rowid; appends pay nothing for search. Content changed later
(completing a pending message) is re-indexed by the same call. A hard delete removes the
message from the index (trigger) and keeps the mark at or below the newest remaining rowid,
so a rowid reused after deleting the newest message is still indexed.

PostgreSQL: the trigger stays (GIN's pending list keeps inserts cheap) and now indexes the
search text; existing messages with tool calls are re-indexed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_TOOL_TEXT = (
    "coalesce((SELECT ' ' || group_concat(json_extract(p.value, '$.name') || ' ' || "
    "coalesce(json_extract(p.value, '$.arguments'), ''), ' ') FROM json_each(m.parts) p "
    "WHERE json_extract(p.value, '$.type') = 'tool_call'), '')"
)
SQLITE_SEARCH_TEXT = f"m.content || {_SQLITE_TOOL_TEXT}"

_SQLITE_UPGRADE = (
    "DROP TRIGGER IF EXISTS chat_messages_fts_update",
    "DROP TRIGGER IF EXISTS chat_messages_fts_delete",
    "DROP TRIGGER IF EXISTS chat_messages_fts_insert",
    "DROP TABLE IF EXISTS chat_messages_fts",
    "CREATE VIRTUAL TABLE chat_messages_fts USING fts5(body, tokenize='unicode61 remove_diacritics 0')",
    "CREATE TABLE chat_search_state (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1), "
    "indexed_rowid INTEGER NOT NULL)",
    "INSERT INTO chat_search_state (id, indexed_rowid) VALUES (1, 0)",
    "CREATE TRIGGER chat_messages_fts_delete AFTER DELETE ON chat_messages BEGIN "
    "DELETE FROM chat_messages_fts WHERE rowid = old.rowid; "
    "UPDATE chat_search_state SET indexed_rowid = (SELECT coalesce(max(rowid), 0) FROM chat_messages) "
    "WHERE indexed_rowid > (SELECT coalesce(max(rowid), 0) FROM chat_messages); END",
)

_SQLITE_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS chat_messages_fts_delete",
    "DROP TABLE IF EXISTS chat_search_state",
    "DROP TABLE IF EXISTS chat_messages_fts",
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


def _postgres_sync(text: str) -> str:
    return (
        "CREATE OR REPLACE FUNCTION chat_messages_search_sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO chat_messages_search (message_id, search_vector) "
        f"VALUES (NEW.id, to_tsvector('simple'::regconfig, {text})) "
        "ON CONFLICT (message_id) DO UPDATE SET search_vector = EXCLUDED.search_vector; "
        "RETURN NULL; END $$"
    )


_POSTGRES_TOOL_TEXT = (
    "coalesce((SELECT ' ' || string_agg((p->>'name') || ' ' || coalesce(p->>'arguments', ''), ' ') "
    "FROM json_array_elements({parts}) p WHERE p->>'type' = 'tool_call'), '')"
)

_POSTGRESQL_UPGRADE = (
    _postgres_sync("NEW.content || " + _POSTGRES_TOOL_TEXT.format(parts="NEW.parts")),
    "UPDATE chat_messages_search s SET search_vector = to_tsvector('simple'::regconfig, m.content || "
    + _POSTGRES_TOOL_TEXT.format(parts="m.parts")
    + ") FROM chat_messages m WHERE m.id = s.message_id AND m.parts IS NOT NULL",
)

_POSTGRESQL_DOWNGRADE = (
    _postgres_sync("NEW.content"),
    "UPDATE chat_messages_search s SET search_vector = to_tsvector('simple'::regconfig, m.content) "
    "FROM chat_messages m WHERE m.id = s.message_id AND m.parts IS NOT NULL",
)


def upgrade() -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    for statement in _SQLITE_UPGRADE if sqlite else _POSTGRESQL_UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_context().dialect.name == "sqlite"
    for statement in _SQLITE_DOWNGRADE if sqlite else _POSTGRESQL_DOWNGRADE:
        op.execute(statement)
