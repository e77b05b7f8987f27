"""Full-text search over the principal's live messages.

Whatever the user types is only ever text: it is cut into words here, and each word is
quoted into the backend's query syntax (an FTS5 MATCH string or a ``tsquery``) and sent as a
bound parameter, so quotes, operators (``OR``, ``NEAR``, ``-``), SQL and unicode can neither
fail nor change the query. Query syntax:

- words must all occur (any order, any case): ``rome hotel``;
- ``"..."`` is a phrase, its words adjacent and in order: ``"hotel in rome"``;
- a word ending in ``*`` is a prefix: ``hot*`` finds "hotel" and "hotter".

What is searched is a message's content followed by the name and arguments of each of its
tool calls. A word is a run of letters, digits and combining marks; everything else separates
words. The backends tokenize stored text almost alike; PostgreSQL keeps some compound tokens whole (URLs,
e-mail addresses, decimal numbers, file paths), so a part of one matches only on SQLite.
PostgreSQL indexes the first 200,000 characters of a message's search text (all that always fits
in one ``tsvector``), SQLite all of it.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from chatmemory import _cursor, _rows
from chatmemory import _queries as q
from chatmemory import _sql as sql
from chatmemory._db import purged_meanwhile, refused_as_read_only
from chatmemory._messages import same_conversation
from chatmemory._plan import Many, Plan, Row, Stmt
from chatmemory._scope_base import Id, ScopeBase
from chatmemory._validation import parse_id
from chatmemory.errors import InvalidInputError, StorageError
from chatmemory.models import Message, Page
from chatmemory.principal import Principal

__all__ = ["HIGHLIGHT_END", "HIGHLIGHT_START", "MessageHit", "SearchOps"]


HIGHLIGHT_START = "\u00ab"
"""Opens a match in ``MessageHit.snippet`` (``«``)."""
HIGHLIGHT_END = "\u00bb"
"""Closes a match in ``MessageHit.snippet`` (``»``)."""

MAX_TERMS = 32
MAX_WORD = 255
SNIPPET_WORDS = 24
_ROLES = ("system", "user", "assistant", "tool")
_WORD = re.compile(r"([^\W_]+)(\*)?")
_MARKED_WORD = re.compile(r"([^ *]+)(\*)?")
INDEX_PART = 5_000
"""About how many messages a search indexes per write transaction when it finds messages it has
not indexed (``_index_tail``)."""
SQLITE_FTS_TABLE = "chat_messages_fts"
"""SQLite's search index; see migrations 0002 and 0003 (PostgreSQL's: 0002, 0003 and 0006)."""


class MessageHit(BaseModel):
    """One search result.

    ``snippet`` is an excerpt of the message with each match between ``«`` and ``»``
    (``HIGHLIGHT_START``/``HIGHLIGHT_END``). ``rank`` is the relevance, higher is better;
    it only compares hits of the same search. It depends on the message and the query alone:
    on PostgreSQL ``ts_rank``, on SQLite how often the query matches in the message against
    the message's length (BM25's term-frequency part; FTS5's own ``bm25`` is not used, since it
    weighs words by their rarity among all users' messages).
    """

    model_config = ConfigDict(frozen=True)

    message: Message
    conversation_id: UUID
    conversation_title: str | None = None
    snippet: str
    rank: float


@dataclass(frozen=True, slots=True)
class Term:
    """A word (``prefix`` when it ended in ``*``) or a phrase of several words."""

    words: tuple[str, ...]
    prefix: bool = False


def parse_query(query: str) -> list[Term]:
    """The terms of a search query; never fails, and may be empty (nothing to look for)."""
    terms: list[Term] = []
    segments = query.split('"')
    # With an odd number of quotes the last one is unmatched: what follows it is plain words.
    closed = len(segments) if len(segments) % 2 else len(segments) - 1
    for i, segment in enumerate(segments):
        found = [(m[1], bool(m[2])) for m in _words(segment) if len(m[1]) <= MAX_WORD]
        if i % 2 and i < closed:
            if found:
                terms.append(Term(tuple(word for word, _ in found)[:MAX_TERMS]))
        else:
            terms.extend(Term((word,), prefix) for word, prefix in found)
    return terms[:MAX_TERMS]


def _words(segment: str) -> Iterator[re.Match[str]]:
    """The words of ``segment`` (group 1) and their ``*`` (group 2).

    Combining marks belong to the word they are in, as both backends index them: the vowel
    signs of Devanagari or Thai, Arabic vowel marks, an accent typed as a separate character.
    """
    if segment.isascii():
        return _WORD.finditer(segment)
    kept = "".join(
        ch if ch.isalnum() or ch == "*" or unicodedata.category(ch)[0] == "M" else " " for ch in segment
    )
    return _MARKED_WORD.finditer(kept)


def fts5_query(terms: list[Term]) -> str:
    """An FTS5 MATCH string: every term a quoted string, so nothing in it is an operator."""
    quoted = ('"' + " ".join(t.words).replace('"', '""') + '"' + ("*" if t.prefix else "") for t in terms)
    return " ".join(quoted)


def tsquery(terms: list[Term]) -> str:
    """A ``to_tsquery`` string: quoted lexemes joined by ``&``, phrases by ``<->``."""

    def lexeme(word: str, prefix: bool) -> str:
        return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'" + (":*" if prefix else "")

    parts = [
        "(" + " <-> ".join(lexeme(w, False) for w in t.words) + ")"
        if len(t.words) > 1
        else lexeme(t.words[0], t.prefix)
        for t in terms
    ]
    return " & ".join(parts)


class SearchOps(ScopeBase):
    async def search_messages(
        self,
        query: str,
        *,
        conversation_id: Id | None = None,
        history_id: Id | None = None,
        role: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Page[MessageHit]:
        """Live messages of visible conversations matching ``query``, most relevant first.

        Messages written since the last search are indexed first, so every committed message
        is found; on a read-only database (a PostgreSQL standby, a SQLite file opened read-only)
        that step is skipped, and the search finds what earlier searches (on the primary) indexed.
        Ties in relevance go to the most recent message. A message's rank depends on it and the
        query alone, never on other messages, so pages read with cursors give each hit that
        matched throughout exactly once, whatever is written between them. See the
        module documentation for the query syntax; any text is a valid query, and one without
        words finds nothing.

        Raises:
            ConversationNotFound, HistoryNotFound: the given one is not visible.
            InvalidInputError: ``query`` is not a string or is longer than a message's content
                may be, or a bad role, limit or cursor.
        """
        if not isinstance(query, str):
            raise InvalidInputError("query", "must be a string")
        # Only the first words count, but finding them in megabytes of text would hold the loop.
        if len(query) > self._limits.content:
            raise InvalidInputError("query", f"longer than {self._limits.content} characters")
        if role is not None and role not in _ROLES:
            raise InvalidInputError("role", f"must be one of {', '.join(_ROLES)}")
        limit = self._page_size(limit)
        cid = None if conversation_id is None else parse_id("conversation_id", conversation_id)
        hid = None if history_id is None else parse_id("history_id", history_id)
        terms = parse_query(query)
        sqlite = self._db.is_sqlite
        text = fts5_query(terms) if sqlite else tsquery(terms)
        # On SQLite the digest also names the rank: a cursor of a version that ranked by bm25
        # holds a rank of another scale, from which a page would skip or repeat hits.
        ranked = (text, cid, hid, role, "message alone") if sqlite else (text, cid, hid, role)
        digest = hashlib.sha256(repr(ranked).encode()).hexdigest()[:16]
        after = _position(digest, cursor) if cursor is not None else None
        # Looked for by a read first, so only a search that has work writes (on SQLite, queues
        # behind the one writer).
        upto = await self._db.run(_unindexed())
        retries = _PURGED_RETRIES
        while upto:
            try:
                if await self._db.run(_index_tail(upto), write=True):
                    break
            except StorageError as exc:
                if retries and purged_meanwhile(exc):
                    # A message the part found live was deleted and purged before its index
                    # row was written (PostgreSQL): the part, undone, goes again without it.
                    retries -= 1
                    continue
                if not refused_as_read_only(exc):
                    raise
                # A read-only database (a PostgreSQL standby, a SQLite file opened read-only):
                # what earlier searches (on the primary) indexed.
                break
        rows, snippets = await self._db.run(
            _search(self.principal, text if terms else None, cid, hid, role, after, limit, sqlite=sqlite)
        )
        found = _rows.messages([row[:16] for row in rows[:limit]], sqlite)
        hits = [
            MessageHit(
                message=message,
                conversation_id=message.conversation_id,
                conversation_title=row[16],
                snippet=snippets.get(_key(row[0]), ""),
                rank=row[17],
            )
            for message, row in zip(found, rows, strict=False)
        ]
        more = len(rows) > limit
        last = hits[-1] if more else None
        next_cursor = (
            _cursor.encode(
                "s",
                digest,
                last.rank,
                last.message.created_at.isoformat(),
                last.message.seq,
                str(last.message.id),
            )
            if last
            else None
        )
        return _rows.page(hits, next_cursor, more)


# How many times a search indexes a part again after a purge took one of its messages meanwhile.
_PURGED_RETRIES = 3


def _unindexed() -> Plan[int]:
    """Where the messages written since the last search end, 0 if there are none: on SQLite
    the greatest message rowid, on PostgreSQL the change clock (``_index_tail``)."""
    rows = yield Stmt(sql.UNINDEXED_TAIL, {})
    return int(rows[0][0]) if rows and rows[0][0] else 0


def _index_tail(upto: int) -> Plan[bool]:
    """Index a part of the messages written since the last search, up to ``upto``: about
    ``INDEX_PART`` of them (on SQLite by rowid, on PostgreSQL by the changes that wrote them).
    So a search after a bulk load (or the first after an upgrade) holds SQLite's one writer for
    a part at a time, not for all of it, and on PostgreSQL what a part indexed stays done if a
    later one is cut short (the role's statement timeout does not apply to it, see
    ``sql.UPKEEP_WITHOUT_TIMEOUT``). Answers whether it indexed all it was to."""
    bound = yield Stmt(sql.INDEX_BOUND, {"upto": upto, "skip": INDEX_PART - 1})
    last = int(bound[0][0]) if bound else None
    reached: list[Row] = []
    for statement in sql.INDEX_TAIL:
        reached = yield Stmt(statement, {"bound": last, "upto": upto, "part": INDEX_PART})
    if last is not None:  # SQLite
        return last >= upto
    return bool(reached and reached[0][0])


def _position(digest: str, cursor: str) -> list[Any]:
    stored, rank, created_at, seq, last_id = _cursor.decode("s", cursor, 5)
    try:
        if stored != digest or not isinstance(rank, int | float) or not isinstance(created_at, str):
            raise ValueError
        if not math.isfinite(rank := float(rank)):
            raise ValueError
        return [
            rank,
            _cursor.timestamp(created_at),
            _cursor.sequence(seq),
            parse_id("cursor", last_id),
        ]
    except (ValueError, OverflowError, InvalidInputError):
        raise InvalidInputError("cursor", "is not a cursor from this search") from None


def _key(value: Any) -> str:
    return value.hex if isinstance(value, UUID) else str(value)


def _search(
    principal: Principal,
    text: str | None,
    cid: UUID | None,
    hid: UUID | None,
    role: str | None,
    after: list[Any] | None,
    limit: int,
    *,
    sqlite: bool,
) -> Plan[tuple[list[Row], dict[str, str]]]:
    """The page of hits and their snippets (computed for the page only): on PostgreSQL in one
    statement (each row's last column), on SQLite in a second one. A hit is of a visible
    conversation and history, in the ones the filters name, so the filters are checked only
    when there is none.

    Raises:
        ConversationNotFound, HistoryNotFound: a filter names one not visible.
        InvalidInputError: the history filtered on is not in the conversation filtered on.
    """
    if text is None:
        yield from _filters(principal, cid, hid)
        return [], {}
    scope, params = q.principal_params(principal)
    statement = sql.search_page(scope, cid is not None, hid is not None, role is not None, after is not None)
    params.update(q=text, cid=cid, hid=hid, role=role, limit=limit + 1, shown=limit)
    if after is not None:
        params.update(a_rank=after[0], a_created=after[1], a_seq=after[2], a_id=after[3])
    rows: list[Row] = yield Stmt(statement, params)
    if not rows:
        yield from _filters(principal, cid, hid)
        return rows, {}
    if not sqlite:
        return rows, {_key(row[0]): row[-1] for row in rows[:limit]}
    found = yield Stmt(sql.SNIPPETS, {"q": text, "ids": Many([row[0] for row in rows[:limit]])})
    return rows, {_key(row[0]): row[1] for row in found}


def _filters(principal: Principal, cid: UUID | None, hid: UUID | None) -> Plan[None]:
    """Check that the conversation and history filtered on are visible, and the history in the
    conversation."""
    if cid is not None:
        yield from q.find_conversation(principal, cid)
    if hid is not None:
        same_conversation(cid, (yield from q.find_history(principal, hid)))
