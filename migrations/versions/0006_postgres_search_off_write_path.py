"""PostgreSQL indexes messages for search at search time too, instead of on every insert.

Until now a row trigger computed each appended message's ``tsvector`` and inserted it into
``chat_messages_search`` inside the append, which cost an append of 100 messages more than
half its time. Now a search first indexes, in one batch, the messages of the changes past
``chat_search_state.indexed_change`` (the change log's ids follow commit order, see 0005) and
moves that mark to the clock, so appends pay nothing for search and every search still sees
every committed live message. Content changed later (completing a pending message) is still
re-indexed by the row trigger, now on ``UPDATE OF content`` only. SQLite has indexed at search
time since 0003 and is unchanged.

The mark starts at the clock's value with the insert trigger gone: dropping it locks
``chat_messages``, so every transaction that inserted messages under the trigger has
committed (and logged its changes at or below that value) before the mark is read.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TRIGGER = (
    "CREATE TRIGGER chat_messages_search_sync AFTER {events} ON chat_messages "
    "FOR EACH ROW EXECUTE FUNCTION chat_messages_search_sync()"
)

_UPGRADE = (
    "DROP TRIGGER chat_messages_search_sync ON chat_messages",
    _TRIGGER.format(events="UPDATE OF content"),
    "CREATE TABLE chat_search_state (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1), "
    "indexed_change BIGINT NOT NULL)",
    "INSERT INTO chat_search_state (id, indexed_change) SELECT 1, n FROM chat_change_clock WHERE id = 1",
)

_DOWNGRADE = (
    "DROP TRIGGER chat_messages_search_sync ON chat_messages",
    _TRIGGER.format(events="INSERT OR UPDATE OF content"),
    "INSERT INTO chat_messages_search (message_id, search_vector) "
    "SELECT m.id, to_tsvector('simple'::regconfig, m.content || coalesce((SELECT ' ' || "
    "string_agg((p->>'name') || ' ' || coalesce(p->>'arguments', ''), ' ') "
    "FROM json_array_elements(m.parts) p "
    "WHERE p->>'type' = 'tool_call'), '')) FROM chat_messages m "
    "WHERE NOT EXISTS (SELECT 1 FROM chat_messages_search s WHERE s.message_id = m.id)",
    "DROP TABLE chat_search_state",
)


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for statement in _UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for statement in _DOWNGRADE:
            op.execute(statement)
