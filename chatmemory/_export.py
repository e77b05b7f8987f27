"""Conversations as self-contained JSON documents, and back.

A document holds one conversation with everything in it: its histories (model, prompts,
status, usage, timestamps) and their messages (seq, parts, native, usage, status, key,
timestamps), all with their ids. Soft-deleted data is not exported. Many documents make
a JSON Lines file, one document per line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, ValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from chatmemory import _changes as changes
from chatmemory import _queries as q
from chatmemory import _rows
from chatmemory import _sql as sql
from chatmemory._conversations import _detail
from chatmemory._ids import new_id
from chatmemory._plan import Plan, Row, Stmt
from chatmemory._schema import conversations, histories, messages
from chatmemory._scope_base import Id, ScopeBase
from chatmemory._validation import check_json, check_text, dump_parts, invalid_input, parse_id, utc_time
from chatmemory.content import ContentPart, flatten_content
from chatmemory.errors import ConflictError, ConversationNotFound, InvalidInputError
from chatmemory.models import Conversation, HistoryStatus, Message, MessageStatus, Native, Role
from chatmemory.principal import Principal

__all__ = ["FORMAT_VERSION", "ConversationExport", "ExportOps", "dump_line", "read_lines"]

FORMAT_VERSION = 1
"""The ``format_version`` of documents this version writes and reads."""

C, H, M = q.C, q.H, q.M
_EXPORT_BATCH = 100
# Far beyond any conversation, and leaves appends after an import room within 64 bits.
_MAX_SEQ = 2**62


def _in_utc(value: datetime) -> datetime:
    try:
        return utc_time("time", value)
    except InvalidInputError:
        raise ValueError("is out of range in UTC") from None


_Time = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExportedMessage(_Doc):
    """A message in an export document."""

    id: UUID
    seq: int = Field(ge=1, le=_MAX_SEQ)
    role: Role
    content: str
    parts: list[ContentPart] | None = None
    model: str | None = Field(default=None, min_length=1, max_length=200)
    status: MessageStatus
    error: str | None = None
    usage: dict[str, JsonValue] | None = None
    metadata: dict[str, JsonValue] | None = None
    native: Native | None = None
    key: str | None = Field(default=None, min_length=1, max_length=255)
    created_at: _Time
    updated_at: _Time


class ExportedHistory(_Doc):
    """A history and its messages in an export document."""

    id: UUID
    model: str = Field(min_length=1, max_length=200)
    system_prompts: list[str] | None = None
    metadata: dict[str, JsonValue] | None = None
    status: HistoryStatus
    usage: dict[str, JsonValue] | None = None
    error: str | None = None
    finished_at: _Time | None = None
    created_at: _Time
    updated_at: _Time
    messages: list[ExportedMessage]


class ExportedConversation(_Doc):
    """The conversation itself in an export document."""

    id: UUID
    owner_id: str
    tenant_id: str | None = None
    title: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    pinned_at: _Time | None = None
    archived_at: _Time | None = None
    created_at: _Time
    updated_at: _Time


class ConversationExport(_Doc):
    """A whole conversation: the document ``export_conversation`` writes (as a dict)."""

    format_version: Literal[1]
    conversation: ExportedConversation
    histories: list[ExportedHistory]


def dump_line(document: Mapping[str, Any]) -> str:
    """One JSON Lines line (with its newline) for a document."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n"


def read_lines(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """``(line_number, document, None)`` per JSON Lines line, or ``(line_number, None, error)``.

    Blank lines are skipped, and a byte order mark before the first; a line that is not a JSON
    object (or is nested too deeply to read) yields its error.
    """
    for number, line in enumerate(lines, start=1):
        if number == 1:
            line = line.removeprefix("\ufeff")  # a byte order mark, as some editors save UTF-8
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError as exc:
            yield number, None, f"not JSON: {exc}"
            continue
        except RecursionError:  # how the reader gives up on deep nesting
            yield number, None, "not JSON: nested too deeply to read"
            continue
        if isinstance(document, dict):
            yield number, document, None
        else:
            yield number, None, "not a JSON object"


class ExportOps(ScopeBase):
    async def export_conversation(self, id: Id) -> dict[str, Any]:
        """The conversation as a JSON-ready document with a ``format_version``.

        Raises:
            ConversationNotFound: no visible conversation has this id.
        """
        return await self._export(parse_id("conversation_id", id))

    async def export_conversations(self) -> AsyncIterator[dict[str, Any]]:
        """Every visible conversation (archived ones too) as documents, oldest first."""
        after: tuple[Any, Any] | None = None
        while True:
            batch = await self._db.run(_batch(self.principal, after))
            for row in batch:
                try:
                    document = await self._export(row[0] if isinstance(row[0], UUID) else UUID(row[0]))
                except ConversationNotFound:
                    continue  # deleted since it was listed
                yield document
            if len(batch) < _EXPORT_BATCH:
                return
            after = (batch[-1][1], batch[-1][0])

    async def _export(self, cid: UUID) -> dict[str, Any]:
        sqlite = self._db.is_sqlite
        summary_row, history_rows, message_rows = await self._db.run(
            _detail(self.principal, cid, True, not sqlite)
        )
        conversation = q.conversation_of(_rows.one(_rows.summaries, summary_row, sqlite))
        loaded: dict[UUID, list[Message]] = {}
        for message in _rows.messages(message_rows, sqlite, cid):
            loaded.setdefault(message.history_id, []).append(message)
        return {
            "format_version": FORMAT_VERSION,
            "conversation": conversation.model_dump(mode="json"),
            "histories": [
                {
                    **h.model_dump(mode="json", exclude={"conversation_id"}),
                    "messages": [
                        {
                            **m.model_dump(mode="json", exclude={"conversation_id", "history_id", "parts"}),
                            "parts": None if m.parts is None else dump_parts(m.parts),
                        }
                        for m in loaded.get(h.id, [])
                    ],
                }
                for h in _rows.histories(history_rows, sqlite)
            ],
        }

    async def import_conversation(
        self, document: Mapping[str, Any], *, owner: str | None = None, new_ids: bool = False
    ) -> Conversation:
        """Restore an exported conversation, all or nothing, in this principal's tenant.

        Everything is kept as exported (seq, statuses, finished histories, pending and
        failed messages, timestamps); ``new_ids=True`` gives the conversation, its
        histories and its messages fresh ids. ``owner`` (default: this principal) may
        name someone else only for an admin.

        Raises:
            InvalidInputError: the document is malformed, of another format version, over a
                limit, or ``owner`` names someone else and this principal is not an admin.
            ConflictError: an id in the document is already stored (import with ``new_ids``).
        """
        doc = self._parse_document(document)
        owner_id = self.principal.id if owner is None else owner
        if owner_id != self.principal.id and not self.principal.admin:
            raise InvalidInputError("owner", "only an admin may import conversations for someone else")
        if not isinstance(owner_id, str) or not owner_id or len(owner_id) > 255:
            raise InvalidInputError("owner", "must be a non-empty string of at most 255 characters")
        check_text("owner", owner_id)
        conv_row, history_rows, message_rows = _import_rows(doc, owner_id, self.principal.tenant, new_ids)
        sqlite = self._db.is_sqlite

        async def write(conn: AsyncConnection) -> None:
            if not new_ids:
                await _check_free(
                    conn, conv_row["id"], [h["id"] for h in history_rows], [m["id"] for m in message_rows]
                )
            try:
                await conn.execute(insert(conversations).values(conv_row))
                if history_rows:
                    await conn.execute(insert(histories), history_rows)
                for start in range(0, len(message_rows), 1000):
                    await conn.execute(insert(messages), message_rows[start : start + 1000])
            except IntegrityError as exc:
                if new_ids:
                    raise
                # Free when checked, taken since: an import of the same ids committed meanwhile
                # (PostgreSQL runs both at once; SQLite's writer lock orders them).
                raise ConflictError(
                    f"conversation {conv_row['id']}: an id was stored meanwhile; import with new_ids=True "
                    "to make a copy"
                ) from exc
            await changes.log_on(conn, sqlite, "conversation.created", conv_row["id"])

        await self._db.write_apart(write)
        return Conversation.model_validate(conv_row)

    def _parse_document(self, document: Mapping[str, Any]) -> ConversationExport:
        if not isinstance(document, Mapping):
            raise InvalidInputError("document", "must be a JSON object")
        version = document.get("format_version")
        if version != FORMAT_VERSION:
            raise InvalidInputError(
                "format_version", f"is {version!r}; this chatmemory reads {FORMAT_VERSION}"
            )
        try:
            doc = ConversationExport.model_validate(dict(document))
        except ValidationError as exc:
            raise invalid_input(exc, "document") from None
        self._title(doc.conversation.title)
        _check_values(document)
        seqs: set[int] = set()
        for i, history in enumerate(doc.histories):
            self._text(f"document.histories.{i}.error", history.error)
            keys: set[str] = set()
            for j, m in enumerate(history.messages):
                field = f"document.histories.{i}.messages.{j}"
                self._text(f"{field}.error", m.error)
                if m.seq in seqs:
                    raise InvalidInputError(f"{field}.seq", f"{m.seq} appears twice")
                seqs.add(m.seq)
                if m.key is not None:
                    if m.key in keys:
                        raise InvalidInputError(f"{field}.key", "appears twice in one history")
                    keys.add(m.key)
                if m.model is not None and m.role != "assistant":
                    raise InvalidInputError(f"{field}.model", f"a {m.role} message has no model")
                if m.parts is not None and flatten_content(m.parts) != m.content:
                    raise InvalidInputError(f"{field}.content", "does not match its parts")
                self._check_content(m.parts if m.parts is not None else m.content, f"{field}.content")
                check_text(f"{field}.content", m.content)
        ids = [h.id for h in doc.histories] + [m.id for h in doc.histories for m in h.messages]
        if len(set(ids)) != len(ids) or doc.conversation.id in ids:
            raise InvalidInputError("document", "an id appears twice")
        return doc


def _check_values(document: Mapping[str, Any]) -> None:
    """Require JSON throughout a validated document, each value of the conversation, a history or
    a message nested at most as deeply as the call that stores it allows, from its own root
    (not from the document's: a document holds every value a call accepted).

    Raises:
        InvalidInputError: a value is not JSON, or is nested too deeply.
    """
    _check_fields("document.conversation", document["conversation"])
    histories = document["histories"]
    _check_container("document.histories", histories, list)
    for i, history in enumerate(histories):
        _check_fields(f"document.histories.{i}", history, nested="messages")
        messages = history["messages"]
        _check_container(f"document.histories.{i}.messages", messages, list)
        for j, message in enumerate(messages):
            _check_fields(f"document.histories.{i}.messages.{j}", message)


def _check_fields(field: str, values: Any, nested: str | None = None) -> None:
    _check_container(field, values, dict)
    for name, value in values.items():
        if name == nested:
            continue
        if name == "native" and isinstance(value, dict):  # its data is checked from its own root
            for part, inner in value.items():
                check_json(f"{field}.native.{part}", inner)
        else:
            check_json(f"{field}.{name}", value)


def _check_container(field: str, value: Any, kind: type) -> None:
    if not isinstance(value, kind):
        raise InvalidInputError(field, f"must be JSON, got {type(value).__name__}")


def _batch(principal: Principal, after: tuple[Any, Any] | None) -> Plan[list[Row]]:
    scope, params = q.principal_params(principal)
    params["limit"] = _EXPORT_BATCH
    if after is not None:
        params.update(a_at=after[0], a_id=after[1])
    rows: list[Row] = yield Stmt(sql.export_batch(scope, after is not None), params)
    return rows


def _import_rows(
    doc: ConversationExport, owner_id: str, tenant: str | None, new_ids: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    def ident(old: UUID) -> UUID:
        return new_id() if new_ids else old

    c = doc.conversation
    cid = ident(c.id)
    all_messages = sorted((m for h in doc.histories for m in h.messages), key=lambda m: m.seq)
    conv_row = {
        **c.model_dump(exclude={"id", "owner_id", "tenant_id"}),
        "id": cid,
        "owner_id": owner_id,
        "tenant_id": tenant,
        "last_seq": all_messages[-1].seq if all_messages else 0,
        "message_count": len(all_messages),
        "last_message_preview": all_messages[-1].content[: q.PREVIEW_CHARS] if all_messages else None,
    }
    history_rows: list[dict[str, Any]] = []
    message_rows: list[dict[str, Any]] = []
    for h in sorted(doc.histories, key=lambda h: (h.created_at, h.id)):
        hid = ident(h.id)
        history_rows.append(
            {**h.model_dump(exclude={"id", "messages"}), "id": hid, "chat_conversation_id": cid}
        )
        for m in sorted(h.messages, key=lambda m: m.seq):
            row = m.model_dump(exclude={"id", "parts", "native"})
            row.update(
                id=ident(m.id),
                chat_conversation_id=cid,
                chat_history_id=hid,
                parts=None if m.parts is None else dump_parts(m.parts),
                native=None if m.native is None else m.native.model_dump(mode="json"),
            )
            message_rows.append(row)
    return conv_row, history_rows, message_rows


async def _check_free(
    conn: AsyncConnection, cid: UUID, history_ids: list[UUID], message_ids: list[UUID]
) -> None:
    taken = (await conn.execute(select(C.id).where(C.id == cid))).first()
    if taken is None and history_ids:
        taken = (await conn.execute(select(H.id).where(H.id.in_(history_ids)).limit(1))).first()
    for start in range(0, len(message_ids), 1000):
        if taken is not None:
            break
        chunk = message_ids[start : start + 1000]
        taken = (await conn.execute(select(M.id).where(M.id.in_(chunk)).limit(1))).first()
    if taken is not None:
        raise ConflictError(f"{taken[0]} is already stored; import with new_ids=True to make a copy")
