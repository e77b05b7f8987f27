"""PostgreSQL indexes at most the first 200,000 characters of a message's search text.

A ``tsvector`` holds at most 1 MiB of words and positions, and a message's search text has no
bound (its tool calls' arguments are not limited), so ``to_tsvector`` failed on some messages:
completing a pending message with such content failed. The row trigger now cuts the search text
as the search-time indexing does (``chatmemory._sql.POSTGRES_SEARCH_CHARS``): 200,000 characters
take at most 800 KiB of a ``tsvector``. SQLite indexes all of it and is unchanged.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT = (
    "NEW.content || coalesce((SELECT ' ' || string_agg((p->>'name') || ' ' || coalesce(p->>'arguments', ''), "
    "' ') FROM json_array_elements(NEW.parts) p WHERE p->>'type' = 'tool_call'), '')"
)


def _sync(text: str) -> str:
    return (
        "CREATE OR REPLACE FUNCTION chat_messages_search_sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO chat_messages_search (message_id, search_vector) "
        f"VALUES (NEW.id, to_tsvector('simple'::regconfig, {text})) "
        "ON CONFLICT (message_id) DO UPDATE SET search_vector = EXCLUDED.search_vector; "
        "RETURN NULL; END $$"
    )


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_sync(f"left({_TEXT}, 200000)"))


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_sync(_TEXT))
