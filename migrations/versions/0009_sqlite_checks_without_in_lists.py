"""SQLite checks a message's role and status, and a history's status, without an ``IN`` list.

``role IN ('system', 'user', 'assistant', 'tool')`` in a CHECK constraint makes SQLite build a
temporary index of the list for every row it writes. The two checks on ``chat_messages`` were
over a third of what SQLite spent writing a batch of messages (0.69-0.72 against 0.43-0.45 ms
for 100, ``python -m benchmarks.schema_cost``). The same tests written as
comparisons joined by ``OR`` cost next to nothing and accept and refuse exactly the same values.

SQLite cannot alter a constraint, and rebuilding ``chat_messages`` would copy every message and
renumber the rowids the search index refers to. So the tables' stored definitions are edited in
place, SQLite's documented procedure for changing a CHECK constraint
(https://www.sqlite.org/lang_altertable.html#otheralter): every stored row satisfies the new
check, since it is the same test. A definition that does not hold the expected text (a database
not created by these migrations), a connection that may not edit its schema
(``SQLITE_DBCONFIG_DEFENSIVE``) and an offline script (``chatmemory migrate --sql``, which cannot
read the schema's version) keep the ``IN`` lists: the same checks, only slower.

PostgreSQL evaluates either form alike and is left as it is: changing a constraint there scans
the whole table under a lock, for nothing.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _one_of(column: str, *values: str) -> tuple[str, str]:
    listed = ", ".join(f"'{value}'" for value in values)
    compared = " OR ".join(f"{column} = '{value}'" for value in values)
    return f"CHECK ({column} IN ({listed}))", f"CHECK ({compared})"


_CHECKS = (
    ("chat_histories", *_one_of("status", "running", "completed", "failed", "cancelled")),
    ("chat_messages", *_one_of("role", "system", "user", "assistant", "tool")),
    ("chat_messages", *_one_of("status", "complete", "pending", "error")),
)


def _rewrite(old_to_new: Sequence[tuple[str, str, str]]) -> None:
    if op.get_context().dialect.name != "sqlite" or context.is_offline_mode():
        return
    bind = op.get_bind()
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    edit = sa.text(
        "UPDATE sqlite_master SET sql = replace(sql, :old, :new) WHERE type = 'table' AND name = :table"
    )
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    savepoint = bind.begin_nested()
    try:
        for table, old, new in old_to_new:
            bind.execute(edit, {"table": table, "old": old, "new": new})
        bind.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    except sa.exc.DatabaseError:
        # An I/O error, a full disk or an interrupt can make SQLite roll back the whole
        # transaction: going on would run the rest of the upgrade outside any transaction.
        if not bind.connection.driver_connection.in_transaction:
            raise
        savepoint.rollback()  # the schema may not be edited on this connection: the IN lists stay
    else:
        savepoint.commit()
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    _rewrite(_CHECKS)


def downgrade() -> None:
    _rewrite([(table, new, old) for table, old, new in _CHECKS])
