"""SQLite's search index takes symbols newer than its Unicode tables for what they are: not letters.

FTS5's ``unicode61`` tokenizer knows the characters of Unicode 6.1 (2012). A character assigned
since, about 1,000 emoji among them (U+1F642, slightly smiling face), or not assigned yet, is a
word character to it: ``Thanks🙂`` was indexed as one word, and neither ``thanks`` nor anything a
user types found the message. PostgreSQL, and the query's own parsing, take such a character for
the separator it is.

The index is made again with those characters as separators: the code points of the blocks
symbols and emoji come from that SQLite counts as word characters and today's Unicode counts as
symbols, or leaves unassigned (the ranges below, found by indexing each code point of those
blocks, against Python's Unicode 14 tables). Like migration 0003, the table starts empty with its
mark at zero: the first search indexes every message, in one batch.

PostgreSQL's ``simple`` parser already separates them; it is left as it is.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEPARATORS = (
    (0x2065, 0x2069),
    (0x2072, 0x2073),
    (0x208F, 0x208F),
    (0x209D, 0x209F),
    (0x20BA, 0x20CF),
    (0x20F1, 0x20FF),
    (0x218A, 0x218F),
    (0x23F4, 0x23FF),
    (0x2427, 0x243F),
    (0x244B, 0x245F),
    (0x2700, 0x2700),
    (0x2B4D, 0x2B4F),
    (0x2B5A, 0x2BFF),
    (0x1F02C, 0x1F02F),
    (0x1F094, 0x1F09F),
    (0x1F0AF, 0x1F0B0),
    (0x1F0BF, 0x1F0C0),
    (0x1F0D0, 0x1F0D0),
    (0x1F0E0, 0x1F0FF),
    (0x1F10D, 0x1F10F),
    (0x1F12F, 0x1F12F),
    (0x1F16C, 0x1F16F),
    (0x1F19B, 0x1F1E5),
    (0x1F203, 0x1F20F),
    (0x1F23B, 0x1F23F),
    (0x1F249, 0x1F24F),
    (0x1F252, 0x1F2FF),
    (0x1F321, 0x1F32F),
    (0x1F336, 0x1F336),
    (0x1F37D, 0x1F37F),
    (0x1F394, 0x1F39F),
    (0x1F3C5, 0x1F3C5),
    (0x1F3CB, 0x1F3DF),
    (0x1F3F1, 0x1F3FF),
    (0x1F43F, 0x1F43F),
    (0x1F441, 0x1F441),
    (0x1F4F8, 0x1F4F8),
    (0x1F4FD, 0x1F4FF),
    (0x1F53E, 0x1F53F),
    (0x1F544, 0x1F54F),
    (0x1F568, 0x1F5FA),
    (0x1F641, 0x1F644),
    (0x1F650, 0x1F67F),
    (0x1F6C6, 0x1F6FF),
    (0x1F774, 0x1FAFF),
    (0xE0000, 0xE0000),
    (0xE0002, 0xE001F),
)


def _table(separators: str) -> tuple[str, ...]:
    option = f" separators ''{separators}''" if separators else ""  # quoted inside the quotes
    return (
        "DROP TABLE IF EXISTS chat_messages_fts",
        "CREATE VIRTUAL TABLE chat_messages_fts USING fts5(body, "
        f"tokenize='unicode61 remove_diacritics 0{option}')",
        "UPDATE chat_search_state SET indexed_rowid = 0",
    )


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        separators = "".join(chr(c) for first, last in _SEPARATORS for c in range(first, last + 1))
        for statement in _table(separators):
            op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for statement in _table(""):
            op.execute(statement)
