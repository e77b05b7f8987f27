"""The SQL a hand-written client of chatmemory's schema needs: the floor for chatmemory's own cost.

Each statement does what chatmemory's call does, in the fewest round trips: an append bumps
the conversation's ``last_seq`` (checking the owner in the same statement) and inserts the
messages with consecutive ``seq``, in one transaction; a read checks the owner by a join.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from benchmarks._data import MODEL, Msg, uuid7
from benchmarks._system import SchemaConversation

PREVIEW_CHARS = 200

INSERT_CONVERSATION = (
    "INSERT INTO chat_conversations (id, owner_id, title, metadata, last_seq, message_count,"
    " created_at, updated_at) VALUES (?, ?, 'benchmark', '{}', 0, 0, ?, ?)"
)
INSERT_HISTORY = (
    "INSERT INTO chat_histories (id, chat_conversation_id, model, status, created_at, updated_at)"
    " VALUES (?, ?, ?, 'running', ?, ?)"
)
BUMP = (
    "UPDATE chat_conversations SET last_seq = last_seq + ?, message_count = message_count + ?,"
    " last_message_preview = ?, updated_at = ?"
    " WHERE id = ? AND owner_id = ? AND tenant_id IS NULL AND deleted_at IS NULL RETURNING last_seq"
)
MESSAGE_COLUMNS = (
    "id, chat_conversation_id, chat_history_id, seq, role, content, model, status, created_at, updated_at"
)
INSERT_MESSAGE = f"INSERT INTO chat_messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_READ = (
    "SELECT m.id, m.chat_conversation_id, m.chat_history_id, m.seq, m.role, m.content, m.parts, m.model,"
    ' m.status, m.error, m.usage, m.metadata, m.native, m."key", m.created_at, m.updated_at'
    " FROM chat_messages m JOIN chat_conversations c ON c.id = m.chat_conversation_id"
    " WHERE m.chat_conversation_id = ? AND c.owner_id = ? AND c.tenant_id IS NULL"
    " AND c.deleted_at IS NULL AND m.deleted_at IS NULL"
)
READ_LAST = _READ + " ORDER BY m.seq DESC LIMIT ?"
READ_ALL = _READ + " ORDER BY m.seq"
CONTENT = 5
RECENT = (
    "SELECT id, owner_id, tenant_id, title, metadata, pinned_at, archived_at, created_at, updated_at,"
    " message_count, last_message_preview FROM chat_conversations"
    " WHERE owner_id = ? AND tenant_id IS NULL AND deleted_at IS NULL AND archived_at IS NULL"
    " ORDER BY pinned_at IS NOT NULL DESC, updated_at DESC, id DESC LIMIT ?"
)
PREVIEW = 10


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, …``."""
    counter = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


@dataclass(frozen=True)
class Codec:
    """How ids and timestamps are written on a backend (the forms SQLAlchemy uses for the schema)."""

    id: Callable[[UUID], Any]
    time: Callable[[datetime], Any]


SQLITE = Codec(lambda u: u.hex, lambda t: t.replace(tzinfo=None).isoformat(" ", "microseconds"))
POSTGRES = Codec(lambda u: u, lambda t: t)


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


def new_conversation(owner: str, codec: Codec) -> tuple[SchemaConversation, tuple[Any, ...], tuple[Any, ...]]:
    """A conversation with one running history: the handle and both rows' parameters."""
    conv = SchemaConversation(owner, uuid7(), uuid7())
    when = codec.time(now())
    cid = codec.id(conv.conversation_id)
    return (
        conv,
        (cid, owner, when, when),
        (codec.id(conv.history_id), cid, MODEL, when, when),
    )


def bump_params(
    conv: SchemaConversation, batch: Sequence[Msg], codec: Codec, when: datetime
) -> tuple[Any, ...]:
    """Parameters of ``BUMP`` for appending ``batch``."""
    n = len(batch)
    return (
        n,
        n,
        batch[-1].text[:PREVIEW_CHARS],
        codec.time(when),
        codec.id(conv.conversation_id),
        conv.owner,
    )


def message_rows(
    conv: SchemaConversation, batch: Sequence[Msg], last_seq: int, codec: Codec, when: datetime
) -> list[tuple[Any, ...]]:
    """``INSERT_MESSAGE`` parameters for ``batch``, ending at ``last_seq``."""
    stamp = codec.time(when)
    cid, hid = codec.id(conv.conversation_id), codec.id(conv.history_id)
    first = last_seq - len(batch) + 1
    return [
        (
            codec.id(uuid7()),
            cid,
            hid,
            first + i,
            m.role,
            m.text,
            MODEL if m.role == "assistant" else None,
            "complete",
            stamp,
            stamp,
        )
        for i, m in enumerate(batch)
    ]
