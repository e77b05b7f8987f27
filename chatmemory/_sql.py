"""Every statement the scope operations run, per backend, in one place.

Statements are written with ``:name`` parameters; each is rewritten once to numbered
parameters (SQLite's ``?n``, asyncpg's ``$n``), which the drivers bind by position. Variants
(the principal's kind of scope, a row lock, an optional filter) are built on first use and
cached, so no SQL is composed per call.
"""

from __future__ import annotations

import functools
import re

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

PREVIEW_CHARS = 200


class SQL:
    """One statement: its SQLite text, its PostgreSQL text, and each with numbered parameters
    (``?n`` and ``$n``) and the parameter names in their order, for positional binding."""

    __slots__ = ("names", "postgres", "sqlite", "sqlite_names", "sqlite_numbered")

    def __init__(self, sqlite: str, postgres: str | None = None) -> None:
        self.sqlite = sqlite
        self.sqlite_numbered, self.sqlite_names = _numbered(sqlite, "?")
        self.postgres, self.names = _numbered(sqlite if postgres is None else postgres, "$")

    def __repr__(self) -> str:
        return f"SQL({self.sqlite!r})"


def _numbered(text: str, mark: str) -> tuple[str, tuple[str, ...]]:
    """``text`` with each ``:name`` as ``{mark}n``, and the names in the order of ``n``."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"{mark}{names.index(match[1]) + 1}"

    return _PARAM.sub(number, text), tuple(names)


def _both(text: str, *, lock: str = "") -> SQL:
    """The same statement on both backends; ``lock`` is a row lock clause only PostgreSQL has."""
    return SQL(text.replace("{lock}", ""), text.replace("{lock}", lock))


def _in(column: str, name: str) -> tuple[str, str]:
    return f"{column} IN (SELECT value FROM json_each(:{name}))", f"{column} = ANY(:{name})"


CONVERSATION = (
    "c.id, c.owner_id, c.tenant_id, c.title, c.metadata, c.pinned_at, c.archived_at, "
    "c.created_at, c.updated_at"
)
SUMMARY = CONVERSATION + ", c.message_count, c.last_message_preview"
HISTORY = (
    "h.id, h.chat_conversation_id, h.model, h.system_prompts, h.metadata, h.status, h.usage, h.error, "
    "h.finished_at, h.created_at, h.updated_at"
)
# A message never changed since it was stored has ``updated_at`` = ``created_at``: it is read as
# NULL then, one timestamp fewer to decode per row (``_rows.messages`` fills it in), which on
# PostgreSQL is about a third of what reading a row costs the driver.
MESSAGE = (
    "m.id, m.chat_conversation_id, m.chat_history_id, m.seq, m.role, m.content, m.parts, m.model, m.status, "
    "m.error, m.usage, m.metadata, m.native, m.key, m.created_at, NULLIF(m.updated_at, m.created_at)"
)
# The messages of one conversation, which the query names: its id is left NULL rather than read
# and decoded for every row (``_rows.messages`` fills it in from ``conversation_id``).
MESSAGE_IN_CONVERSATION = MESSAGE.replace("m.chat_conversation_id", "NULL", 1)

Scope = tuple[bool, bool]
"""Which visibility clause a principal needs: (has no tenant, is admin)."""


def visible(scope: Scope) -> str:
    """Live conversations ``c`` the principal (``:p_owner``, ``:p_tenant``) may see."""
    no_tenant, admin = scope
    clause = "c.deleted_at IS NULL AND " + ("c.tenant_id IS NULL" if no_tenant else "c.tenant_id = :p_tenant")
    return clause if admin else clause + " AND c.owner_id = :p_owner"


def visible_conversation(scope: Scope) -> str:
    """Whether the conversation ``:cid`` is visible, checked once for a query of its rows (as a
    join, PostgreSQL may look it up again for every row, and plans for that when it takes the
    conversation for a small one: before its statistics know better, a page of 50 then read
    and sorted all 10k messages of the conversation in 10 ms rather than 3.5)."""
    return f"EXISTS (SELECT 1 FROM chat_conversations c WHERE c.id = :cid AND {visible(scope)})"


# -- conversations ----------------------------------------------------------------------------

INSERT_CONVERSATION = _both(
    "INSERT INTO chat_conversations (id, owner_id, tenant_id, title, metadata, pinned_at, archived_at, "
    "last_seq, message_count, last_message_preview, created_at, updated_at) VALUES (:id, :owner_id, "
    ":tenant_id, :title, :metadata, NULL, NULL, 0, 0, NULL, :created_at, :created_at)"
)
UPDATE_CONVERSATION = _both(
    "UPDATE chat_conversations SET title = :title, metadata = :metadata, pinned_at = :pinned_at, "
    "archived_at = :archived_at, updated_at = :updated_at WHERE id = :cid"
)
TOUCH_CONVERSATION = _both("UPDATE chat_conversations SET updated_at = :when WHERE id = :cid")
DELETE_CONVERSATION = tuple(
    _both(f"UPDATE {table} SET deleted_at = :when WHERE {column} = :cid AND deleted_at IS NULL")
    for table, column in (
        ("chat_messages", "chat_conversation_id"),
        ("chat_histories", "chat_conversation_id"),
        ("chat_conversations", "id"),
    )
)
_CONVERSATION_HISTORIES = (
    f"SELECT {HISTORY} FROM chat_histories h WHERE h.chat_conversation_id = :cid AND h.deleted_at IS NULL "
    "ORDER BY h.created_at, h.id"
)
CONVERSATION_HISTORIES = _both(_CONVERSATION_HISTORIES)
# Where a re-sent ``record_run`` finds its run (``_runs``): a conversation's live histories of
# ``:model`` finished ``:status`` that hold a live message keyed ``:key``, newest first; one probe
# of the key index per history of the conversation. A scalar subquery, not EXISTS: PostgreSQL
# turns an EXISTS into a join, which on tables not yet analyzed it planned as a scan of the whole
# key index per history (125 ms for a conversation of 2,000 runs, where the probes take 1.6 ms).
RECORDED_WITH_KEY = _both(
    f"SELECT {HISTORY} FROM chat_histories h WHERE h.chat_conversation_id = :cid AND h.deleted_at IS NULL "
    "AND h.status = :status AND h.model = :model AND (SELECT 1 FROM chat_messages m "
    "WHERE m.chat_history_id = h.id AND m.key = :key AND m.deleted_at IS NULL LIMIT 1) IS NOT NULL "
    "ORDER BY h.created_at DESC, h.id DESC"
)
# Counts the messages removed rather than recounting the conversation's, so that the cost
# does not grow with the conversation; the preview is read from the newest end of the
# (conversation, seq) index.
REFRESH_SUMMARY = _both(
    "UPDATE chat_conversations SET message_count = message_count - :removed, last_message_preview = ("
    f"SELECT substr(content, 1, {PREVIEW_CHARS}) FROM chat_messages "
    "WHERE chat_conversation_id = :cid AND deleted_at IS NULL ORDER BY seq DESC LIMIT 1), "
    "updated_at = :when WHERE id = :cid"
)


@functools.cache
def get_conversation(scope: Scope, lock: bool = False) -> SQL:
    return _both(f"{_conversation(scope)}{{lock}}", lock=" FOR UPDATE" if lock else "")


def _conversation(scope: Scope) -> str:
    return f"SELECT {SUMMARY} FROM chat_conversations c WHERE c.id = :cid AND {visible(scope)}"


@functools.cache
def list_conversations(scope: Scope, pinned: bool, archived: bool | None, after: bool) -> SQL:
    """One part of the listing (pinned or not), read from an ``updated_at`` index."""
    where = [visible(scope), "c.pinned_at IS NOT NULL" if pinned else "c.pinned_at IS NULL"]
    if archived is not None:
        where.append("c.archived_at IS NOT NULL" if archived else "c.archived_at IS NULL")
    if after:
        where.append("(c.updated_at < :after_at OR (c.updated_at = :after_at AND c.id < :after_id))")
    return _both(
        f"SELECT {SUMMARY}, {0 if pinned else 1} AS part FROM chat_conversations c "
        f"WHERE {' AND '.join(where)} ORDER BY c.updated_at DESC, c.id DESC LIMIT :limit"
    )


@functools.cache
def listing(scope: Scope, archived: bool | None, cursor: bool | None) -> SQL:
    """A page of the listing in one statement: pinned ones first, then the rest.

    Each part is read from its own index and limited to the page, so the page costs what it
    holds. ``cursor`` is where the last page ended: ``None`` at the start, ``True`` inside the
    pinned part, ``False`` inside the rest.
    """
    parts = []
    if cursor is not False:
        parts.append(list_conversations(scope, True, archived, cursor is True))
    parts.append(list_conversations(scope, False, archived, cursor is False))
    sqlite = " UNION ALL ".join(f"SELECT * FROM ({p.sqlite})" for p in parts)
    postgres = " UNION ALL ".join(f"({p.sqlite})" for p in parts)
    order = " ORDER BY part, updated_at DESC, id DESC LIMIT :limit"
    return SQL(f"SELECT * FROM ({sqlite}){order}", f"SELECT * FROM ({postgres}) u{order}")


# -- histories --------------------------------------------------------------------------------


@functools.cache
def start_history_sqlite(scope: Scope) -> SQL:
    """SQLite: a running history inserted into the conversation ``:cid`` if it is visible, the
    check and the insert in one statement; it changes no row when the conversation is not."""
    return SQL(
        "INSERT INTO chat_histories (id, chat_conversation_id, model, system_prompts, metadata, status, "
        "usage, error, finished_at, created_at, updated_at) SELECT :id, c.id, :model, :system_prompts, "
        ":metadata, 'running', NULL, NULL, NULL, :when, :when FROM chat_conversations c WHERE c.id = :cid "
        f"AND {visible(scope)}",
        "",
    )


@functools.cache
def change_history_sqlite(scope: Scope, fields: tuple[str, ...]) -> SQL:
    """SQLite: a running, visible history's ``fields`` changed, the check and the change in one
    statement, answering its row as the change left it; no row when it is not visible or not
    running (the caller tells which)."""
    sets = ", ".join(f"{name} = :{name}" for name in fields)
    return SQL(
        f"UPDATE chat_histories AS h SET {sets} WHERE h.id = :hid AND h.deleted_at IS NULL "
        "AND h.status = 'running' AND EXISTS (SELECT 1 FROM chat_conversations c "
        f"WHERE c.id = h.chat_conversation_id AND {visible(scope)}) "
        # RETURNING names the table's own columns, without the alias.
        f"RETURNING {HISTORY.replace('h.', '')}",
        "",
    )


DELETE_HISTORY = _both("UPDATE chat_histories SET deleted_at = :when WHERE id = :hid AND deleted_at IS NULL")
DELETE_HISTORY_MESSAGES = _both(
    "UPDATE chat_messages SET deleted_at = :when WHERE chat_history_id = :hid AND deleted_at IS NULL"
)


@functools.cache
def get_history(scope: Scope, lock: bool = False) -> SQL:
    return _both(f"{_history(scope)}{{lock}}", lock=" FOR UPDATE OF c" if lock else "")


def _history(scope: Scope) -> str:
    return (
        f"SELECT {HISTORY} FROM chat_histories h JOIN chat_conversations c ON c.id = h.chat_conversation_id "
        f"WHERE h.id = :hid AND h.deleted_at IS NULL AND {visible(scope)}"
    )


# -- messages ---------------------------------------------------------------------------------

# SQLite only (PostgreSQL inserts a batch inside its append's one statement); its rows are
# positional, in the order of its parameters (``_messages._stored``). The columns most messages
# leave NULL are sent as '' for NULL (a value none of them can hold: JSON text, a key or a model
# name is never empty): ``sqlite3`` binds a ``None`` through its adapter lookup, a fifth of a
# microsecond each, which for five such columns was about a sixth of SQLite's time to insert a
# batch (``benchmarks/README.md``).
INSERT_MESSAGE = _both(
    "INSERT INTO chat_messages (id, chat_conversation_id, chat_history_id, seq, role, content, parts, model, "
    "status, error, usage, metadata, native, key, created_at, updated_at) VALUES (:id, :conversation_id, "
    ":history_id, :seq, :role, :content, NULLIF(:parts, ''), NULLIF(:model, ''), :status, NULL, "
    "NULLIF(:usage, ''), NULLIF(:metadata, ''), NULLIF(:native, ''), NULLIF(:key, ''), "
    ":created_at, :created_at)"
)
BUMP_CONVERSATION = _both(
    "UPDATE chat_conversations SET last_seq = :last_seq, message_count = message_count + :added, "
    "last_message_preview = :preview, updated_at = :when WHERE id = :cid"
)
DELETE_MESSAGE = _both("UPDATE chat_messages SET deleted_at = :when WHERE id = :mid AND deleted_at IS NULL")
SETTLE_MESSAGE = _both(
    "UPDATE chat_messages SET status = :status, content = :content, parts = :parts, model = :model, "
    "error = :error, updated_at = :updated_at WHERE id = :mid AND status = 'pending'"
)
_HISTORY_MESSAGES = (
    f"SELECT {MESSAGE} FROM chat_messages m WHERE m.chat_history_id = :hid AND m.deleted_at IS NULL "
    "ORDER BY m.seq"
)
HISTORY_MESSAGES = _both(_HISTORY_MESSAGES)
# The first ``:limit`` of them: enough to tell whether a history holds exactly a run's messages.
FIRST_HISTORY_MESSAGES = _both(f"{_HISTORY_MESSAGES} LIMIT :limit")
_OF_CONVERSATION = (
    f"SELECT {MESSAGE_IN_CONVERSATION} FROM chat_messages m WHERE m.chat_conversation_id = :cid "
    "AND m.deleted_at IS NULL"
)
CONVERSATION_MESSAGES = _both(f"{_OF_CONVERSATION} ORDER BY m.seq")
_KEYS = _in("m.key", "keys")
# The unique index of a history's live keys (``_schema``'s name for it), which refuses a key
# inserted without being looked up (``Stmt.unread_keys``) when it is stored already.
KEY_INDEX = "ix_chat_messages_chat_history_id_key"
MESSAGES_BY_KEY = SQL(
    f"SELECT {MESSAGE} FROM chat_messages m WHERE m.chat_history_id = :hid AND m.deleted_at IS NULL AND "
    + _KEYS[0],
    f"SELECT {MESSAGE} FROM chat_messages m WHERE m.chat_history_id = :hid AND m.deleted_at IS NULL AND "
    + _KEYS[1],
)


NEWEST_MESSAGES = _both(
    "SELECT m.id, m.seq, m.chat_history_id FROM chat_messages m WHERE m.chat_conversation_id = :cid "
    "AND m.deleted_at IS NULL ORDER BY m.seq DESC LIMIT :limit"
)
DELETE_TAIL = _both(
    "UPDATE chat_messages SET deleted_at = :when WHERE chat_conversation_id = :cid AND deleted_at IS NULL "
    "AND seq >= :seq"
)
SET_CONVERSATION_METADATA = _both(
    "UPDATE chat_conversations SET metadata = :metadata, updated_at = :when WHERE id = :cid"
)


def _tail_conversation(scope: Scope) -> str:
    return f"SELECT {SUMMARY}, c.last_seq FROM chat_conversations c WHERE c.id = :cid AND {visible(scope)}"


def _tail_messages(since: bool, limit: bool, conversation: str = ":cid") -> str:
    after = " AND m.created_at >= :since" if since else ""
    of_conversation = _OF_CONVERSATION.replace(":cid", conversation)
    return f"{of_conversation}{after} ORDER BY m.seq DESC{' LIMIT :limit' if limit else ''}"


@functools.cache
def tail_conversation(scope: Scope) -> SQL:
    """SQLite: the visible conversation's summary and its ``last_seq``."""
    return SQL(_tail_conversation(scope), "-- SQLite only")


@functools.cache
def tail_messages(since: bool, limit: bool) -> SQL:
    """SQLite: a conversation's newest live messages, newest first (of a visible conversation)."""
    return SQL(_tail_messages(since, limit), "-- SQLite only")


def _width(columns: str) -> int:
    """How many columns a select list names (commas inside parentheses are not between two)."""
    depth, width = 0, 1
    for char in columns:
        depth += (char == "(") - (char == ")")
        width += char == "," and not depth
    return width


MESSAGE_COLUMNS = _width(MESSAGE)
HISTORY_COLUMNS = _width(HISTORY)


def _of_visible(key: str) -> str:
    """The parent's ``key`` parameter, in a ``_row_then_children`` child's condition, with the
    test that the parent is visible: the parameter itself rather than the parent's id read from
    its row, so that the planner knows the value and reads the children in index order (read
    from the row, it planned a sort of a conversation's messages)."""
    return f"{key} AND EXISTS (SELECT FROM p)"


def _row_then_children(parent: str, children: str, width: int) -> SQL:
    """PostgreSQL: the row ``parent`` selects and the rows ``children`` selects (which names the
    parent by ``_of_visible``) in one statement, so from one snapshot (a reader's statements
    each take their own under READ COMMITTED), in one round trip. Its rows have the children's
    columns, then the parent's: first the parent's row (the children's columns NULL), then
    the children, in their query's order (the parent's columns NULL); no row when the parent
    is not visible. Each query's first ``" FROM "`` ends its select list (see
    ``_queries.row_then_children``, which splits the rows)."""
    select = len("SELECT ")
    # ``width`` is what the rows are split by: a select list cut anywhere else would not have it.
    assert _width(children[select : children.index(" FROM ")]) == width
    no_child = ", ".join(["NULL"] * width)
    no_parent = ", ".join(["NULL"] * _width(parent[select : parent.index(" FROM ")]))
    children = children.replace(" FROM ", f", {no_parent} FROM ", 1)
    return SQL(
        "-- PostgreSQL only",
        f"WITH p AS MATERIALIZED ({parent}) SELECT {no_child}, p.* FROM p UNION ALL ({children})",
    )


@functools.cache
def tail_postgres(scope: Scope, since: bool, limit: bool) -> SQL:
    """PostgreSQL: ``tail_conversation`` then ``tail_messages`` in one statement (``MESSAGE_COLUMNS``
    children, see ``_row_then_children``)."""
    messages = _tail_messages(since, limit, _of_visible(":cid"))
    return _row_then_children(_tail_conversation(scope), messages, MESSAGE_COLUMNS)


@functools.cache
def history_with_messages_postgres(scope: Scope) -> SQL:
    """PostgreSQL: a visible history's row then its live messages in order, in one statement
    (``MESSAGE_COLUMNS`` children, see ``_row_then_children``)."""
    messages = _HISTORY_MESSAGES.replace(":hid", _of_visible(":hid"))
    return _row_then_children(_history(scope), messages, MESSAGE_COLUMNS)


@functools.cache
def conversation_with_histories_postgres(scope: Scope) -> SQL:
    """PostgreSQL: a visible conversation's summary then its live histories in order, in one
    statement (``HISTORY_COLUMNS`` children, see ``_row_then_children``)."""
    histories = _CONVERSATION_HISTORIES.replace(":cid", _of_visible(":cid"))
    return _row_then_children(_conversation(scope), histories, HISTORY_COLUMNS)


@functools.cache
def lock_for_append(scope: Scope) -> SQL:
    """The history's status, conversation and model, and the conversation's ``last_seq``, locked.

    The history row is locked too (after its conversation, the order every writer takes):
    a row only joined would be read as it was before a wait for the lock, so an append
    queued behind ``finish_history`` would still see the history running.
    """
    return _both(
        "SELECT h.status, h.chat_conversation_id, h.model, c.last_seq FROM chat_conversations c "
        "JOIN chat_histories h ON h.chat_conversation_id = c.id "
        f"WHERE h.id = :hid AND h.deleted_at IS NULL AND {visible(scope)}{{lock}}",
        lock=" FOR UPDATE OF c, h",
    )


@functools.cache
def bump_for_append(scope: Scope) -> SQL:
    """SQLite: the counters of a running, visible history's conversation bumped for ``:added``
    messages, answering the conversation, its ``last_seq`` before the bump and the history's
    model; no row when the history is not visible or not running (the caller tells which)."""
    return SQL(
        "UPDATE chat_conversations AS c SET last_seq = c.last_seq + :added, "
        "message_count = c.message_count + :added, last_message_preview = :preview, updated_at = :when "
        "WHERE c.id = (SELECT h.chat_conversation_id FROM chat_histories h WHERE h.id = :hid "
        f"AND h.deleted_at IS NULL AND h.status = 'running') AND {visible(scope)} "
        "RETURNING id, last_seq - :added, (SELECT h.model FROM chat_histories h WHERE h.id = :hid)",
        "",
    )


@functools.cache
def get_message(scope: Scope, lock: bool = False) -> SQL:
    return _both(
        f"SELECT {MESSAGE} FROM chat_messages m JOIN chat_conversations c ON c.id = m.chat_conversation_id "
        f"WHERE m.id = :mid AND m.deleted_at IS NULL AND {visible(scope)}{{lock}}",
        lock=" FOR UPDATE OF c" if lock else "",
    )


@functools.cache
def list_messages(
    scope: Scope, by_conversation: bool, by_history: bool, newest_first: bool, after: bool
) -> SQL:
    return _both(_list_messages(scope, by_conversation, by_history, newest_first, after))


@functools.cache
def page_with_parent_postgres(
    scope: Scope, by_conversation: bool, by_history: bool, newest_first: bool, after: bool
) -> SQL:
    """PostgreSQL: the visible history (``by_history``) or conversation, then a page of its
    messages (``list_messages``), in one statement (``MESSAGE_COLUMNS`` children, see
    ``_row_then_children``): an empty page told from a parent not found at one moment."""
    page = _list_messages(scope, by_conversation, by_history, newest_first, after)
    return _row_then_children(_history(scope) if by_history else _conversation(scope), page, MESSAGE_COLUMNS)


def _list_messages(
    scope: Scope, by_conversation: bool, by_history: bool, newest_first: bool, after: bool
) -> str:
    if by_conversation:
        query = f"{_OF_CONVERSATION} AND {visible_conversation(scope)}"
    else:
        query = (
            f"SELECT {MESSAGE} FROM chat_messages m JOIN chat_conversations c "
            f"ON c.id = m.chat_conversation_id WHERE {visible(scope)} AND m.deleted_at IS NULL"
        )
    if by_history:
        query += " AND m.chat_history_id = :hid"
    if after:
        query += " AND m.seq < :after" if newest_first else " AND m.seq > :after"
    return f"{query} ORDER BY m.seq{' DESC' if newest_first else ''} LIMIT :limit"


def _conversation_messages(scope: Scope, complete: bool) -> str:
    status = " AND m.status = 'complete'" if complete else ""
    return f"{_OF_CONVERSATION}{status} AND {visible_conversation(scope)} ORDER BY m.seq"


@functools.cache
def conversation_messages(scope: Scope, complete: bool) -> SQL:
    """The live messages (``complete``: the complete ones) of the conversation ``:cid`` in order,
    if it is visible (checked in the same statement, so at the same moment); none if it is not."""
    return _both(_conversation_messages(scope, complete))


@functools.cache
def conversation_with_messages_postgres(scope: Scope, complete: bool) -> SQL:
    """PostgreSQL: a visible conversation's summary then ``conversation_messages``, in one
    statement (``MESSAGE_COLUMNS`` children, see ``_row_then_children``)."""
    return _row_then_children(_conversation(scope), _conversation_messages(scope, complete), MESSAGE_COLUMNS)


_APPEND_COLUMNS = ("id", "role", "content", "parts", "model", "status", "usage", "metadata", "native", "key")
_APPEND_TYPES = ("uuid", "text", "text", "json", "text", "text", "json", "json", "json", "text")


# A batch of messages as one array per column, a row each with its place ``n`` in the batch.
_BATCH = (
    "i AS (SELECT * FROM unnest("
    + ", ".join(f":{c}_values::{t}[]" for c, t in zip(_APPEND_COLUMNS, _APPEND_TYPES, strict=True))
    + f") WITH ORDINALITY AS t({', '.join(_APPEND_COLUMNS)}, n))"
)


def _insert_batch(cid: str, last_seq: str, model: str, source: str) -> str:
    """The batch ``i`` inserted into conversation ``cid`` after ``last_seq``, an assistant's
    message without a model driven by ``model`` (each an SQL expression over ``source``)."""
    return (
        "INSERT INTO chat_messages (id, chat_conversation_id, chat_history_id, seq, role, content, "
        "parts, model, status, error, usage, metadata, native, key, created_at, updated_at) "
        f"SELECT i.id, {cid}, :hid, {last_seq} + i.n, i.role, i.content, i.parts, "
        f"CASE WHEN i.role = 'assistant' THEN coalesce(i.model, {model}) END, i.status, NULL, i.usage, "
        f"i.metadata, i.native, i.key, :when, :when FROM i, {source}"
    )


def _bump(cid: str, last_seq: str, source: str, when: str) -> str:
    """The conversation ``cid``'s counters after the batch (its ``last_seq`` before it given),
    from ``source`` where ``when`` holds."""
    return (
        f"UPDATE chat_conversations x SET last_seq = {last_seq} + :added, "
        "message_count = x.message_count + :added, last_message_preview = :preview, updated_at = :when "
        f"FROM {source} WHERE x.id = {cid} AND {when}"
    )


def _logged(where: str, cid: str, source: str, *own: str) -> str:
    """The clock and log of a statement that logs the changes its transaction recorded before it
    (the ``log_`` parameters ``_changes.logged`` fills), then its ``own``: each one change's
    values after its id and conversation ``cid``, read from ``source``. The clock moves, and
    ``NOTIFY`` names ``cid``, only where ``where`` holds; last in the transaction, its row lock
    orders the commit."""
    k = len(own)
    note = f":log_note || ' ' || {cid}::text"
    mine = "".join(
        f" UNION ALL SELECT clock.n - {k - 1 - i}, {cid}, {values} FROM clock, {source}"
        for i, values in enumerate(own)
    )
    return (
        f"{_CLOCK.format(k=f':log_k + {k}', where=where, payload=note)}, "
        f"log AS ({_LOG_INSERT}SELECT clock.n - :log_k - {k} + r.i, r.cid, r.kind, r.hid, r.mid, r.seq, "
        f"r.cnt, :log_when::timestamptz FROM clock, {_LOG_ROWS}{mine} RETURNING 1)"
    )


@functools.cache
def append_postgres(scope: Scope) -> SQL:
    """A whole append in one PostgreSQL statement.

    Locks the conversation and history rows (as ``lock_for_append``) while checking the
    history is visible, allocates ``seq`` after the locked ``last_seq``, inserts the batch
    (given as one array per column) and bumps the conversation's counters, only if the
    history is running, and logs the changes the transaction recorded so far and this append's
    (``_changes.logged`` fills the ``log_`` parameters). Answers the history's status,
    conversation, model and ``last_seq`` before the append; no row means not visible.
    """
    running_h = "h.status = 'running'"
    appended = "'message.appended', :hid, NULL, h.last_seq + 1, :added, :when"
    text = (
        "WITH h AS (SELECT h.status, h.chat_conversation_id AS cid, h.model, c.last_seq "
        "FROM chat_conversations c JOIN chat_histories h ON h.chat_conversation_id = c.id "
        f"WHERE h.id = :hid AND h.deleted_at IS NULL AND {visible(scope)} FOR UPDATE OF c, h), "
        f"{_BATCH}, "
        f"ins AS ({_insert_batch('h.cid', 'h.last_seq', 'h.model', 'h')} WHERE {running_h} RETURNING 1), "
        f"bump AS ({_bump('h.cid', 'h.last_seq', 'h', running_h)} RETURNING 1), "
        f"{_logged(f'FROM h WHERE k.id = 1 AND {running_h} ', 'h.cid', 'h', appended)} "
        "SELECT h.status, h.cid, h.model, h.last_seq FROM h"
    )
    return SQL("-- PostgreSQL only", text)


@functools.cache
def start_postgres(scope: Scope, batch: bool, finished: bool = False) -> SQL:
    """A history started, with its first messages when ``batch``, in one PostgreSQL statement;
    with ``finished``, also finished (``record_run``).

    Locks the conversation's row while checking it is visible, inserts the history (driven by
    ``:model``, running, or with ``finished`` in ``:status`` since ``:finished_at``) and the batch
    after the conversation's ``last_seq``, bumps its counters (without a batch, sets only its
    time), and logs the changes the transaction recorded so far, the history's start, the
    append and the finish. Answers the conversation's ``last_seq`` before the batch; no row
    means not visible, and then nothing is written.
    """
    own = ["'history.started', :hid, NULL, NULL, NULL, :when"]
    if batch:
        own.append("'message.appended', :hid, NULL, c.last_seq + 1, :added, :when")
        writes = (
            f"{_BATCH}, ins AS ({_insert_batch('c.id', 'c.last_seq', ':model', 'c')} RETURNING 1), "
            f"bump AS ({_bump('c.id', 'c.last_seq', 'c', 'true')} RETURNING 1), "
        )
    else:
        writes = (
            "touch AS (UPDATE chat_conversations x SET updated_at = :when FROM c WHERE x.id = c.id "
            "RETURNING 1), "
        )
    ending = "'running', NULL, NULL, NULL"
    if finished:
        own.append("'history.finished', :hid, NULL, NULL, NULL, :when")
        ending = ":status, :usage, :error, :finished_at"
    text = (
        "WITH c AS (SELECT c.id, c.last_seq FROM chat_conversations c "
        f"WHERE c.id = :cid AND {visible(scope)} FOR UPDATE), "
        "hist AS (INSERT INTO chat_histories (id, chat_conversation_id, model, system_prompts, metadata, "
        "status, usage, error, finished_at, created_at, updated_at) SELECT :hid, c.id, :model, "
        f":system_prompts, :metadata, {ending}, :when, :when FROM c RETURNING 1), "
        f"{writes}{_logged('FROM c WHERE k.id = 1 ', 'c.id', 'c', *own)} "
        "SELECT c.last_seq FROM c"
    )
    return SQL("-- PostgreSQL only", text)


@functools.cache
def change_history_postgres(scope: Scope, fields: tuple[str, ...], batch: bool = False) -> SQL:
    """A running history's ``fields`` changed in one PostgreSQL statement, after its last
    messages when ``batch`` (``finish_run``).

    Locks its conversation's and history's rows (as ``append_postgres``) while checking the
    history is visible, so a deletion or a finish committed while it waited for the lock is
    seen; only if it is running, inserts the batch after the conversation's ``last_seq`` and
    bumps its counters, sets ``fields``, and logs the changes the transaction recorded so far,
    the append and this change (``:kind``; ``_changes.logged`` fills the ``log_``
    parameters). Answers the history's row as it was and the conversation's ``last_seq``
    before the batch, then the row as the change left it (NULLs when it did not change); no
    row means not visible.
    """
    running = "h.status = 'running'"
    own = [":kind, h.id, NULL, NULL, NULL, :log_when"]
    writes = ""
    if batch:
        own.insert(0, "'message.appended', :hid, NULL, h.last_seq + 1, :added, :when")
        writes = (
            f"{_BATCH}, "
            f"ins AS ({_insert_batch('h.chat_conversation_id', 'h.last_seq', 'h.model', 'h')} "
            f"WHERE {running} RETURNING 1), "
            f"bump AS ({_bump('h.chat_conversation_id', 'h.last_seq', 'h', running)} RETURNING 1), "
        )
    sets = ", ".join(f"{name} = :{name}" for name in fields)
    text = (
        f"WITH h AS (SELECT {HISTORY}, c.last_seq FROM chat_conversations c JOIN chat_histories h "
        "ON h.chat_conversation_id = c.id "
        f"WHERE h.id = :hid AND h.deleted_at IS NULL AND {visible(scope)} FOR UPDATE OF c, h), "
        f"{writes}"
        f"u AS (UPDATE chat_histories x SET {sets} FROM h WHERE x.id = h.id AND x.status = 'running' "
        f"RETURNING {HISTORY.replace('h.', 'x.')}), "
        f"{_logged('FROM u, h WHERE k.id = 1 ', 'h.chat_conversation_id', 'h', *own)} "
        "SELECT h.*, u.* FROM h LEFT JOIN u ON true"
    )
    return SQL("-- PostgreSQL only", text)


# -- search index: filled at search time, so appends pay nothing for it -----------------------
# SQLite indexes the messages past a rowid mark (migration 0003); PostgreSQL the messages of the
# changes past a change-log mark (migration 0006), which follows commit order. Content changed
# later is re-indexed as it changes (SQLite: REINDEX_MESSAGE; PostgreSQL: a row trigger).

SEARCH_TEXT_SQLITE = (
    "m.content || coalesce((SELECT ' ' || group_concat(json_extract(p.value, '$.name') || ' ' || "
    "coalesce(json_extract(p.value, '$.arguments'), ''), ' ') FROM json_each(m.parts) p "
    "WHERE json_extract(p.value, '$.type') = 'tool_call'), '')"
)
"""A message's search text: its content, then each tool call's name and arguments (migration 0003)."""
POSTGRES_SEARCH_CHARS = 200_000
"""How much of a message's search text PostgreSQL indexes. The words and positions of a ``tsvector``
hold at most 1 MiB, at most 4 bytes per character of text (one-character words of four UTF-8
bytes, each then a space), so this much always fits; more (long tool-call arguments) would make
``to_tsvector`` fail every search that indexes the message."""
SEARCH_TEXT_POSTGRES = (
    "left(m.content || coalesce((SELECT ' ' || string_agg((p->>'name') || ' ' || "
    "coalesce(p->>'arguments', ''), ' ') FROM json_array_elements(m.parts) p "
    f"WHERE p->>'type' = 'tool_call'), ''), {POSTGRES_SEARCH_CHARS})"
)
"""The same search text on PostgreSQL, cut to ``POSTGRES_SEARCH_CHARS`` (the trigger of migration
0008 computes it alike, for content completed later)."""

# The store's own upkeep (a search's indexing, a migration) runs to its end: the role's
# ``statement_timeout`` (managed services set one) is meant for the application's statements, and
# under it upkeep that outlasts it would fail every time it is tried. For the rest of the
# transaction only (``true``, as ``SET LOCAL``).
UPKEEP_WITHOUT_TIMEOUT = SQL("", "SELECT set_config('statement_timeout', '0', true)")
# The messages a ``conversation.created`` change ``c`` brought, those whose ``seq`` is below this:
# an import's (which logs nothing else), up to the first append logged after it; a conversation
# started empty brought none (its first append is ``seq`` 1). Appends to one conversation log
# rising ``seq`` in id order (both follow its row lock).
_CREATED_UPTO = (
    "coalesce((SELECT a.seq FROM chat_changes a WHERE a.chat_conversation_id = c.chat_conversation_id "
    "AND a.id > c.id AND a.kind = 'message.appended' ORDER BY a.id LIMIT 1), "
    "(SELECT v.last_seq + 1 FROM chat_conversations v WHERE v.id = c.chat_conversation_id), 1)"
)
# What a search indexes first, the end of the tail (else 0): on SQLite the greatest rowid when
# messages are past the mark, on PostgreSQL the change clock when changes are.
UNINDEXED_TAIL = SQL(
    "SELECT CASE WHEN top > (SELECT indexed_rowid FROM chat_search_state) THEN top ELSE 0 END "
    "FROM (SELECT coalesce(max(rowid), 0) AS top FROM chat_messages)",
    "SELECT CASE WHEN s.indexed_change < k.n THEN k.n ELSE 0 END "
    "FROM chat_search_state s, chat_change_clock k WHERE s.id = 1 AND k.id = 1",
)
# SQLite indexes in parts, each a write transaction of its own so that the store's writers, who
# share its one writer, go on between them: the messages past the mark up to ``:bound``, the
# rowid ``:skip`` messages further (or ``:upto``, the tail's end when the search began).
INDEX_BOUND = SQL(
    "SELECT coalesce((SELECT rowid FROM chat_messages WHERE rowid > (SELECT indexed_rowid FROM "
    "chat_search_state) AND rowid <= :upto ORDER BY rowid LIMIT 1 OFFSET :skip), :upto)",
    "",
)
INDEX_TAIL = (
    SQL(
        f"INSERT INTO chat_messages_fts (rowid, body) SELECT m.rowid, {SEARCH_TEXT_SQLITE} "
        "FROM chat_messages m "
        "WHERE m.rowid > (SELECT indexed_rowid FROM chat_search_state) AND m.rowid <= :bound",
        "",
    ),
    # ``max``: another process's search may have moved the mark past ``:bound`` meanwhile. Never
    # past the newest rowid: ``:upto`` was read before this transaction, and a purge since may have
    # removed the newest messages, whose rowids the next appends take again (see migration 0003).
    SQL(
        "UPDATE chat_search_state SET indexed_rowid = max(indexed_rowid, "
        "min(:bound, (SELECT coalesce(max(rowid), 0) FROM chat_messages)))",
        "",
    ),
    # Searches index in turn, holding the mark's row lock. The next statement's snapshot, taken
    # with the lock held, holds every change up to ``:upto`` (the clock's value when the search
    # began; ids follow commit order). It indexes the messages of the changes past the mark, in
    # order, up to the first that brings them to ``:part`` messages (looking at ``:part`` changes
    # at most), or to ``:upto``, and moves the mark there: each part is a transaction of its own,
    # and what it indexed stays indexed if a later part is cut short. ``greatest``: another
    # search may have moved the mark past ``:upto`` meanwhile. Answers whether the mark reached
    # ``:upto``. The commit need not wait for the disk: a crash loses the index rows and the mark
    # together.
    # Indexing is the store's own upkeep (``UPKEEP_WITHOUT_TIMEOUT``): a part is small, but an
    # import is never split, so the first search after a large one indexes it whole, and under
    # the role's timeout every search would fail on it. Set before the lock, whose wait (for
    # another search's part) the lock timeout bounds.
    UPKEEP_WITHOUT_TIMEOUT,
    SQL(
        "",
        "SELECT set_config('synchronous_commit', 'off', true) FROM chat_search_state WHERE id = 1 FOR UPDATE",
    ),
    SQL(
        "",
        "WITH mark AS (SELECT indexed_change AS at FROM chat_search_state WHERE id = 1), "
        "bound AS (SELECT coalesce(min(p.id) FILTER (WHERE p.total >= CAST(:part AS bigint)), "
        "CASE WHEN count(*) >= :part THEN max(p.id) END, :upto) AS at "
        "FROM (SELECT w.id, sum(w.n) OVER (ORDER BY w.id ROWS UNBOUNDED PRECEDING) AS total "
        f"FROM (SELECT c.id, CASE c.kind WHEN 'message.appended' THEN c.seq_count ELSE {_CREATED_UPTO} - 1 "
        "END AS n FROM chat_changes c WHERE c.id > (SELECT at FROM mark) AND c.id <= :upto "
        "AND c.kind IN ('message.appended', 'conversation.created') ORDER BY c.id LIMIT :part) w) p), "
        "todo AS (SELECT c.chat_conversation_id AS cid, c.kind, c.seq, c.seq_count, "
        f"CASE c.kind WHEN 'conversation.created' THEN {_CREATED_UPTO} END AS upto "
        "FROM chat_changes c WHERE c.id > (SELECT at FROM mark) AND c.id <= (SELECT at FROM bound) "
        "AND c.kind IN ('message.appended', 'conversation.created')), "
        "found AS (SELECT m.id FROM todo t JOIN chat_messages m ON m.chat_conversation_id = t.cid "
        "AND m.seq >= t.seq AND m.seq < t.seq + t.seq_count WHERE t.kind = 'message.appended' "
        "UNION SELECT m.id FROM todo t JOIN chat_messages m ON m.chat_conversation_id = t.cid "
        "AND m.seq < t.upto WHERE t.kind = 'conversation.created'), "
        "indexed AS (INSERT INTO chat_messages_search (message_id, search_vector) "
        f"SELECT m.id, to_tsvector('simple'::regconfig, {SEARCH_TEXT_POSTGRES}) "
        # Soft-deleted messages are never found, so they are not indexed: nor are those a purge
        # is removing, whose rows an index row would have to wait for, then fail to reference.
        "FROM found JOIN chat_messages m ON m.id = found.id WHERE m.deleted_at IS NULL "
        # A row already there was written by the content trigger, from newer content.
        "ON CONFLICT (message_id) DO NOTHING) "
        "UPDATE chat_search_state SET indexed_change = greatest(indexed_change, (SELECT at FROM bound)) "
        "WHERE id = 1 RETURNING indexed_change >= :upto",
    ),
)
REINDEX_MESSAGE = (
    SQL(
        "DELETE FROM chat_messages_fts WHERE rowid = (SELECT rowid FROM chat_messages WHERE id = :mid "
        "AND rowid <= (SELECT indexed_rowid FROM chat_search_state))",
        "",
    ),
    SQL(
        f"INSERT INTO chat_messages_fts (rowid, body) SELECT m.rowid, {SEARCH_TEXT_SQLITE} "
        "FROM chat_messages m "
        "WHERE m.id = :mid AND m.rowid <= (SELECT indexed_rowid FROM chat_search_state)",
        "",
    ),
)


# -- search -----------------------------------------------------------------------------------

_HEADLINE = (
    'StartSel=\u00ab, StopSel=\u00bb, MaxWords=24, MinWords=8, MaxFragments=2, FragmentDelimiter=" \u2026 "'
)
# A hit's relevance on SQLite, from the message alone, as PostgreSQL's ``ts_rank`` is (FTS5's
# bm25 weighs each word by its rarity among every user's messages and each message against
# their average length, so a rank would tell what others wrote and move as anyone writes):
# BM25's term-frequency part, ``2.2 * hits / (hits + 0.3 + 0.0018 * chars)`` (k1 = 1.2,
# b = 0.75, against a fixed 500 characters instead of the average), written with ``hits`` once
# so ``highlight()`` runs once. ``hits`` counts the query's matches in the message (the
# characters ``highlight()``'s one-character marks add; matches that overlap, of a phrase such
# as "ha ha" in "ha ha ha", are marked as one), ``chars`` is its length.
_FTS_BODY = "length(chat_messages_fts.body)"
_SQLITE_RANK = (
    f"2.2 / (1.0 + (0.3 + 0.0018 * {_FTS_BODY}) / "
    f"max(1, length(highlight(chat_messages_fts, 0, char(1), '')) - {_FTS_BODY}))"
)
_TSQUERY = "to_tsquery('simple'::regconfig, :q)"


@functools.cache
def search_page(scope: Scope, by_conversation: bool, by_history: bool, by_role: bool, after: bool) -> SQL:
    """Matching live messages with their conversation's title and relevance (higher is better),
    most relevant first, ties to the most recent; ``:limit`` rows after the cursor position.

    On PostgreSQL each row also carries its snippet, made for the first ``:shown`` rows only (a
    page's, not the row that tells there is more), at the same moment as the hits; on SQLite
    ``SNIPPETS`` makes them in the same transaction."""
    where = [visible(scope), "h.deleted_at IS NULL", "m.deleted_at IS NULL"]
    if by_conversation:
        where.append("m.chat_conversation_id = :cid")
    if by_history:
        where.append("m.chat_history_id = :hid")
    if by_role:
        where.append("m.role = :role")
    joins = (
        "JOIN chat_conversations c ON c.id = m.chat_conversation_id "
        "JOIN chat_histories h ON h.id = m.chat_history_id"
    )
    sqlite = (
        f"SELECT {MESSAGE}, c.title AS title, {_SQLITE_RANK} AS rank FROM chat_messages_fts "
        f"JOIN chat_messages m ON m.rowid = chat_messages_fts.rowid {joins} "
        f"WHERE chat_messages_fts MATCH :q AND {' AND '.join(where)}"
    )
    postgres = (
        f"SELECT {MESSAGE}, c.title AS title, ts_rank(s.search_vector, {_TSQUERY})::float8 AS rank "
        f"FROM chat_messages_search s JOIN chat_messages m ON m.id = s.message_id {joins} "
        f"WHERE s.search_vector @@ {_TSQUERY} AND {' AND '.join(where)}"
    )

    position = (
        " WHERE (r.rank < :a_rank OR (r.rank = :a_rank AND (r.created_at < :a_created OR "
        "(r.created_at = :a_created AND (r.seq < :a_seq OR (r.seq = :a_seq AND r.id < :a_id))))))"
        if after
        else ""
    )
    order = "ORDER BY r.rank DESC, r.created_at DESC, r.seq DESC, r.id DESC"
    snippet = f"ts_headline('simple'::regconfig, r.content, {_TSQUERY}, '{_HEADLINE}')"
    page = f"{position} {order} LIMIT :limit"
    # SQLite: ``LIMIT -1`` (no limit) keeps the hits a subquery of their own, each rank computed
    # once, where merged into this query the rank would be computed again for each comparison.
    return SQL(
        f"SELECT r.* FROM ({sqlite} LIMIT -1) r{page}",
        f"SELECT r.*, CASE WHEN row_number() OVER ({order}) <= :shown THEN {snippet} END "
        f"FROM (SELECT * FROM ({postgres}) r{page}) r {order}",
    )


_SNIPPET_IDS = _in("m.id", "ids")
# SQLite only: PostgreSQL's ``search_page`` makes its snippets (no text there, so no round trip).
SNIPPETS = SQL(
    "SELECT m.id, snippet(chat_messages_fts, 0, '\u00ab', '\u00bb', '\u2026', 24) FROM chat_messages_fts "
    "JOIN chat_messages m ON m.rowid = chat_messages_fts.rowid "
    f"WHERE chat_messages_fts MATCH :q AND {_SNIPPET_IDS[0]}",
    "",
)


@functools.cache
def export_batch(scope: Scope, after: bool) -> SQL:
    """The next visible conversations to export, oldest first."""
    position = " AND (c.created_at > :a_at OR (c.created_at = :a_at AND c.id > :a_id))" if after else ""
    return _both(
        f"SELECT c.id, c.created_at FROM chat_conversations c WHERE {visible(scope)}{position} "
        "ORDER BY c.created_at, c.id LIMIT :limit"
    )


# -- change log -------------------------------------------------------------------------------

CHANGE_CHANNEL = "chatmemory_changes"
"""The PostgreSQL channel each writing transaction notifies (delivered only when it commits)."""

RECORD_CHANGE = SQL("", "")
"""What a plan yields to record a change; ``_changes.logged`` writes them all at the end."""

_LOG_COLUMNS = (
    ("cids", "uuid"),
    ("kinds", "text"),
    ("hids", "uuid"),
    ("mids", "uuid"),
    ("seqs", "bigint"),
    ("counts", "int"),
)
_LOG_INSERT = (
    "INSERT INTO chat_changes (id, chat_conversation_id, kind, history_id, message_id, seq, seq_count, "
    "created_at) "
)
_LOG_ROWS = (
    f"unnest({', '.join(f':log_{name}::{kind}[]' for name, kind in _LOG_COLUMNS)}) WITH ORDINALITY "
    "AS r(cid, kind, hid, mid, seq, cnt, i)"
)
# The clock is updated last in a transaction, so its row lock orders commits; NOTIFY is sent on
# commit, its payload naming the store that wrote and the conversations changed.
_CLOCK = (
    "clock AS (UPDATE chat_change_clock k SET n = k.n + {k} {where}RETURNING k.n, "
    f"pg_notify('{CHANGE_CHANNEL}', {{payload}}) AS notified)"
)


LOG_CHANGE = SQL(
    "INSERT INTO chat_changes (chat_conversation_id, kind, history_id, message_id, seq, seq_count, "
    "created_at) VALUES (:cid, :kind, :hid, :mid, :seq, :count, :when)",
    "",
)
"""SQLite: one change, run once per change of a transaction (its one writer keeps ids in commit order)."""

LOG_CHANGES = SQL(
    "",
    f"WITH {_CLOCK.format(k=':log_k', where='WHERE k.id = 1 ', payload=':log_note')} {_LOG_INSERT}"
    "SELECT clock.n - :log_k + r.i, r.cid, r.kind, r.hid, r.mid, r.seq, r.cnt, :log_when "
    f"FROM clock, {_LOG_ROWS}",
)
"""PostgreSQL: a transaction's changes, in the order they were recorded, in one statement that
takes their ids from the clock and notifies."""

CHANGE = (
    "ch.id AS id, ch.chat_conversation_id AS cid, ch.kind AS kind, ch.history_id AS hid, "
    "ch.message_id AS mid, ch.seq AS seq, ch.seq_count AS cnt, ch.created_at AS at"
)
STORE_ID = _both("SELECT store_id FROM chat_store WHERE id = 1")
"""This database's identity (migration 0011)."""
CHANGE_HEAD = SQL(
    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'chat_changes'), 0) AS head",
    "SELECT n AS head FROM chat_change_clock WHERE id = 1",
)
"""The newest change id ever handed out (not the greatest left: a purge may remove those), so a
cursor beyond it never came from this database."""
CHANGED_SINCE = SQL(
    "SELECT id, chat_conversation_id FROM chat_changes WHERE id > :after ORDER BY id LIMIT :limit", ""
)
"""Which conversations changed after a change id (SQLite's poller: whom to wake)."""
CHANGES_KEPT = SQL("SELECT count(*) FROM chat_changes WHERE id >= :after AND id <= :head")
"""How many changes from ``:after`` up to ``:head`` are left: ids leave no gap, so fewer than
there are ids means a purge removed some."""


def owned(scope: Scope) -> str:
    """Conversations ``c`` the principal may see, deleted ones included (owner and tenant never
    change, so whoever could see a conversation still gets the change that deleted it)."""
    return visible(scope).removeprefix("c.deleted_at IS NULL AND ")


@functools.cache
def hidden_changes(scope: Scope) -> SQL:
    """Conversations the principal cannot see with changes from ``:after`` up to ``:until``
    (exclusive), at most ``:limit``."""
    return _both(
        "SELECT DISTINCT ch.chat_conversation_id FROM chat_changes ch "
        "JOIN chat_conversations c ON c.id = ch.chat_conversation_id "
        f"WHERE ch.id >= :after AND ch.id < :until AND NOT coalesce(({owned(scope)}), false) LIMIT :limit"
    )


@functools.cache
def read_changes(scope: Scope, one: bool, counted: bool = True) -> SQL:
    """Up to ``:limit`` changes from ``:after`` on (inclusive), oldest first, as many as make
    ``:budget`` events (and at least one), each with the
    messages its ``seq`` range names (deleted ones flagged), of conversation ``:cid`` (``one``)
    or of every conversation in scope. The first column says whether the conversation is live
    (NULL in the one row that comes back when there is no change, or with ``one`` when the
    conversation is not visible). The next to last column is the newest change id handed out
    (``CHANGE_HEAD``), read in the same snapshot: when fewer than ``:limit`` changes come back,
    none up to it is left. The last, for every conversation (not ``one``) when ``counted``, is
    how many changes of any conversation from ``:after`` on are left: change ids leave no gap,
    so fewer than up to the head means a purge removed some (else NULL)."""
    if one:
        changes = (
            f"SELECT c.deleted_at IS NULL AS live, {CHANGE} FROM chat_conversations c "
            "LEFT JOIN chat_changes ch ON ch.chat_conversation_id = c.id AND ch.id >= :after "
            f"WHERE c.id = :cid AND {owned(scope)} ORDER BY ch.id LIMIT :limit"
        )
    else:
        changes = (
            f"SELECT c.deleted_at IS NULL AS live, {CHANGE} FROM chat_changes ch "
            "JOIN chat_conversations c ON c.id = ch.chat_conversation_id "
            f"WHERE ch.id >= :after AND {owned(scope)} ORDER BY ch.id LIMIT :limit"
        )
    # Changes stop where their events pass ``:budget`` (the first always comes): one change may
    # name a thousand messages, and a read holds all it names.
    budgeted = (
        "SELECT * FROM (SELECT w.*, sum(coalesce(w.cnt, 1)) OVER (ORDER BY w.id) AS upto "
        f"FROM ({changes}) w) b "
        "WHERE b.id IS NULL OR b.upto - coalesce(b.cnt, 1) < :budget"
    )
    kept = "(SELECT count(*) FROM chat_changes k WHERE k.id >= :after)"
    text = (
        "SELECT x.live, x.id, x.cid, x.kind, x.hid, x.mid, x.seq, x.cnt, x.at, m.deleted_at IS NULL, "
        f"{MESSAGE}, hd.head, {kept if counted and not one else 'NULL'} FROM ({{head}}) hd "
        f"LEFT JOIN ({budgeted}) x ON 1 = 1 LEFT JOIN chat_messages m ON m.chat_conversation_id = x.cid "
        "AND m.seq BETWEEN x.seq AND x.seq + x.cnt - 1 ORDER BY x.id, m.seq"
    )
    return SQL(text.replace("{head}", CHANGE_HEAD.sqlite), text.replace("{head}", CHANGE_HEAD.postgres))
