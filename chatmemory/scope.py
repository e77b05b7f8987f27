"""One principal's view of the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import EllipsisType
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import and_, insert, or_, select, update

from chatmemory import _cursor
from chatmemory import _queries as q
from chatmemory._db import Database
from chatmemory._ids import new_id
from chatmemory._schema import conversations, histories, messages
from chatmemory._validation import check_object, check_text, parse_id
from chatmemory.content import ContentPart, flatten_content
from chatmemory.errors import ConflictError, InvalidInputError
from chatmemory.limits import Limits
from chatmemory.models import (
    Conversation,
    ConversationDetail,
    ConversationSummary,
    History,
    HistoryDetail,
    Message,
    NewMessage,
    Page,
    parse_content,
)
from chatmemory.principal import Principal

__all__ = ["Scope"]

Id = UUID | str
C, H, M = q.C, q.H, q.M
_FINISHED = ("completed", "failed", "cancelled")


class Scope:
    """One principal's view of the store, from ``memory.scoped(principal)``.

    Every call is one transaction. Anything the principal may not see raises the same
    ``NotFoundError`` as something that does not exist.
    """

    def __init__(self, db: Database, principal: Principal, limits: Limits) -> None:
        self._db = db
        self._limits = limits
        self.principal = principal

    # -- conversations -------------------------------------------------------------------------

    async def start_conversation(
        self, title: str | None = None, *, metadata: Mapping[str, Any] | None = None
    ) -> Conversation:
        """Start a conversation owned by this principal.

        Raises:
            InvalidInputError: the title is too long or the metadata is not a JSON object.
        """
        values = {
            "id": new_id(),
            "owner_id": self.principal.id,
            "tenant_id": self.principal.tenant,
            "title": self._title(title),
            "metadata": check_object("metadata", metadata) or {},
            "last_seq": 0,
            "message_count": 0,
        }
        values["created_at"] = values["updated_at"] = q.now()
        async with self._db.transaction(write=True) as conn:
            await conn.execute(insert(conversations).values(values))
        return Conversation.model_validate(values)

    async def get_conversation(self, id: Id, *, messages: bool = False) -> ConversationDetail:  # noqa: A002
        """A conversation with its histories, and their messages when ``messages=True``.

        Raises:
            ConversationNotFound: no visible conversation has this id.
        """
        cid = parse_id("conversation_id", id)
        async with self._db.transaction() as conn:
            summary = await q.get_conversation(conn, self.principal, cid)
            rows = await conn.execute(
                select(*q.HISTORY_COLUMNS)
                .where(H.chat_conversation_id == cid, H.deleted_at.is_(None))
                .order_by(H.created_at, H.id)
            )
            runs = [History.model_validate(row._mapping) for row in rows]
            loaded = await q.history_messages(conn, [h.id for h in runs]) if messages else {}
        return ConversationDetail(
            **summary.model_dump(),
            histories=[HistoryDetail(**h.model_dump(), messages=loaded.get(h.id)) for h in runs],
        )

    async def list_conversations(
        self, *, limit: int = 20, cursor: str | None = None, archived: bool | None = False
    ) -> Page[ConversationSummary]:
        """Visible conversations, pinned first, then most recently updated.

        ``archived=False`` leaves archived ones out, ``True`` lists only them, ``None`` both.

        Raises:
            InvalidInputError: bad limit or cursor.
        """
        limit = self._page_size(limit)
        pinned = C.pinned_at.is_not(None)
        query = select(*q.SUMMARY_COLUMNS).where(q.visible(self.principal))
        if archived is not None:
            query = query.where(C.archived_at.is_not(None) if archived else C.archived_at.is_(None))
        if cursor is not None:
            was_pinned, updated_at, last_id = _cursor.decode("c", cursor, 3)
            after = _after(C.updated_at, C.id, _timestamp(updated_at), parse_id("cursor", last_id))
            query = query.where(or_(and_(pinned, after), ~pinned) if was_pinned else and_(~pinned, after))
        query = query.order_by(pinned.desc(), C.updated_at.desc(), C.id.desc()).limit(limit + 1)
        async with self._db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        items = [ConversationSummary.model_validate(row._mapping) for row in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        next_cursor = (
            _cursor.encode("c", last.pinned, last.updated_at.isoformat(), str(last.id)) if last else None
        )
        return Page(items=items, next_cursor=next_cursor, has_more=last is not None)

    async def update_conversation(
        self,
        id: Id,  # noqa: A002
        *,
        title: str | None | EllipsisType = ...,
        metadata: Mapping[str, Any] | EllipsisType = ...,
        pinned: bool | EllipsisType = ...,
        archived: bool | EllipsisType = ...,
    ) -> Conversation:
        """Change what is given; ``...`` (the default) leaves a field as it is.

        Raises:
            ConversationNotFound: no visible conversation has this id.
            InvalidInputError: a value is malformed.
        """
        cid = parse_id("conversation_id", id)
        when = q.now()
        values: dict[str, Any] = {}
        if title is not ...:
            values["title"] = self._title(title)
        if metadata is not ...:
            values["metadata"] = check_object("metadata", metadata) or {}
        if values:
            values["updated_at"] = when
        for name, flag in (("pinned_at", pinned), ("archived_at", archived)):
            if flag is not ...:
                if not isinstance(flag, bool):
                    raise InvalidInputError(name.removesuffix("_at"), "must be a bool")
                values[name] = when if flag else None
        async with self._db.transaction(write=True) as conn:
            current = await q.get_conversation(conn, self.principal, cid, lock=True)
            for name in ("pinned_at", "archived_at"):
                # Re-pinning keeps the original pin time.
                if values.get(name) is not None and getattr(current, name) is not None:
                    values[name] = getattr(current, name)
            if values:
                await conn.execute(update(conversations).where(C.id == cid).values(values))
        return q.conversation_of(current.model_copy(update=values))

    async def delete_conversation(self, id: Id) -> None:  # noqa: A002
        """Soft-delete a conversation and everything in it, in one transaction.

        Raises:
            ConversationNotFound: no visible conversation has this id.
        """
        cid = parse_id("conversation_id", id)
        when = q.now()
        async with self._db.transaction(write=True) as conn:
            await q.get_conversation(conn, self.principal, cid, lock=True)
            for table, column in (
                (messages, M.chat_conversation_id),
                (histories, H.chat_conversation_id),
                (conversations, C.id),
            ):
                await conn.execute(
                    update(table).where(column == cid, table.c.deleted_at.is_(None)).values(deleted_at=when)
                )

    # -- histories -----------------------------------------------------------------------------

    async def start_history(
        self,
        conversation_id: Id,
        *,
        model: str,
        system_prompts: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> History:
        """Start recording one agent run driven by ``model``.

        Raises:
            ConversationNotFound: no visible conversation has this id.
            InvalidInputError: empty model, or malformed prompts or metadata.
        """
        cid = parse_id("conversation_id", conversation_id)
        when = q.now()
        values = {
            "id": new_id(),
            "chat_conversation_id": cid,
            "model": _model_name("model", model),
            "system_prompts": _prompts(system_prompts),
            "metadata": check_object("metadata", metadata),
            "status": "running",
            "created_at": when,
            "updated_at": when,
        }
        async with self._db.transaction(write=True) as conn:
            await q.get_conversation(conn, self.principal, cid, lock=True)
            await conn.execute(insert(histories).values(values))
            await conn.execute(update(conversations).where(C.id == cid).values(updated_at=when))
        return History.model_validate({**values, "conversation_id": cid})

    async def finish_history(
        self,
        id: Id,  # noqa: A002
        *,
        status: Literal["completed", "failed", "cancelled"] = "completed",
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> History:
        """Close a running history; nothing more can be appended to it.

        Raises:
            HistoryNotFound: no visible history has this id.
            ConflictError: the history is already finished.
            InvalidInputError: unknown status, or malformed usage or error.
        """
        hid = parse_id("history_id", id)
        if status not in _FINISHED:
            raise InvalidInputError("status", f"must be one of {', '.join(_FINISHED)}")
        when = q.now()
        values = {
            "status": status,
            "usage": check_object("usage", usage),
            "error": self._text("error", error),
            "finished_at": when,
            "updated_at": when,
        }
        async with self._db.transaction(write=True) as conn:
            history = await q.get_history(conn, self.principal, hid, lock=True)
            if history.status != "running":
                raise ConflictError(f"history {hid} is already {history.status}")
            await conn.execute(update(histories).where(H.id == hid).values(values))
        return history.model_copy(update=values)

    async def get_history(self, id: Id, *, messages: bool = True) -> HistoryDetail:  # noqa: A002
        """A history, with its messages in order unless ``messages=False``.

        Raises:
            HistoryNotFound: no visible history has this id.
        """
        hid = parse_id("history_id", id)
        async with self._db.transaction() as conn:
            history = await q.get_history(conn, self.principal, hid)
            loaded = (await q.history_messages(conn, [hid]))[hid] if messages else None
        return HistoryDetail(**history.model_dump(), messages=loaded)

    async def delete_history(self, id: Id) -> None:  # noqa: A002
        """Soft-delete a history and its messages, in one transaction.

        Raises:
            HistoryNotFound: no visible history has this id.
        """
        hid = parse_id("history_id", id)
        when = q.now()
        async with self._db.transaction(write=True) as conn:
            history = await q.get_history(conn, self.principal, hid, lock=True)
            live = and_(M.chat_history_id == hid, M.deleted_at.is_(None))
            await conn.execute(update(messages).where(live).values(deleted_at=when))
            await conn.execute(update(histories).where(H.id == hid).values(deleted_at=when))
            await q.refresh_summary(conn, history.conversation_id, when)

    # -- messages ------------------------------------------------------------------------------

    async def append_messages(
        self, history_id: Id, messages: Sequence[NewMessage | Mapping[str, Any]]
    ) -> list[Message]:
        """Append messages to a running history, all or none, with consecutive ``seq``.

        A message whose ``key`` is already stored in this history is not added again; the
        stored one is returned in its place.

        Raises:
            HistoryNotFound: no visible history has this id.
            ConflictError: the history is finished.
            InvalidInputError: a message is malformed or over a limit; nothing is written.
        """
        hid = parse_id("history_id", history_id)
        batch = self._batch(messages)
        keys = [m.key for m in batch if m.key is not None]
        async with self._db.transaction(write=True) as conn:
            history = await q.get_history(conn, self.principal, hid, lock=True)
            if history.status != "running":
                raise ConflictError(f"history {hid} is {history.status}; start a new history to add messages")
            stored = await self._stored_keys(conn, hid, keys)
            fresh = [m for m in batch if m.key not in stored]
            result = await self._insert(conn, history, fresh) if fresh else []
        added = iter(result)
        return [stored[m.key] if m.key in stored else next(added) for m in batch]

    async def list_messages(
        self,
        *,
        conversation_id: Id | None = None,
        history_id: Id | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Page[Message]:
        """A page of a conversation's or a history's live messages in ``seq`` order.

        Raises:
            ConversationNotFound, HistoryNotFound: the given one is not visible.
            InvalidInputError: neither id given, or a bad limit or cursor.
        """
        limit = self._page_size(limit)
        kind = "m-" if newest_first else "m+"
        query = select(*q.MESSAGE_COLUMNS).where(M.deleted_at.is_(None))
        if cursor is not None:
            (after,) = _cursor.decode(kind, cursor, 1)
            if not isinstance(after, int):
                raise InvalidInputError("cursor", "is not a cursor from this listing")
            query = query.where(M.seq < after if newest_first else M.seq > after)
        query = query.order_by(M.seq.desc() if newest_first else M.seq).limit(limit + 1)
        if conversation_id is None and history_id is None:
            raise InvalidInputError("conversation_id", "give conversation_id or history_id")
        async with self._db.transaction() as conn:
            if history_id is not None:
                hid = parse_id("history_id", history_id)
                history = await q.get_history(conn, self.principal, hid)
                query = query.where(M.chat_history_id == hid)
                if conversation_id is not None and parse_id("conversation_id", conversation_id) != (
                    history.conversation_id
                ):
                    raise InvalidInputError("history_id", "is not in that conversation")
            else:
                cid = parse_id("conversation_id", conversation_id)
                await q.get_conversation(conn, self.principal, cid)
                query = query.where(M.chat_conversation_id == cid)
            rows = (await conn.execute(query)).all()
        items = [q.message_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items=items, next_cursor=_cursor.encode(kind, items[-1].seq) if more else None, has_more=more)

    async def get_message(self, id: Id) -> Message:  # noqa: A002
        """One message.

        Raises:
            MessageNotFound: no visible message has this id.
        """
        mid = parse_id("message_id", id)
        async with self._db.transaction() as conn:
            return await q.get_message(conn, self.principal, mid)

    async def delete_message(self, id: Id) -> None:  # noqa: A002
        """Soft-delete one message.

        Raises:
            MessageNotFound: no visible message has this id.
        """
        mid = parse_id("message_id", id)
        when = q.now()
        async with self._db.transaction(write=True) as conn:
            message = await q.get_message(conn, self.principal, mid, lock=True)
            await conn.execute(update(messages).where(M.id == mid).values(deleted_at=when))
            await q.refresh_summary(conn, message.conversation_id, when)

    async def complete_message(
        self, id: Id, *, content: str | Sequence[ContentPart | Mapping[str, Any]], model: str | None = None  # noqa: A002
    ) -> Message:
        """Fill in a pending message and mark it complete.

        Raises:
            MessageNotFound: no visible message has this id.
            ConflictError: the message is not pending.
            InvalidInputError: malformed content, or a model on a non-assistant message.
        """
        parsed = parse_content(content)
        self._check_content(parsed, "content")
        values: dict[str, Any] = {
            "status": "complete",
            "content": flatten_content(parsed),
            "parts": None if isinstance(parsed, str) else _dump_parts(parsed),
        }
        if model is not None:
            values["model"] = _model_name("model", model)
        return await self._settle(id, values, allow_model=model is not None)

    async def fail_message(self, id: Id, *, error: str) -> Message:  # noqa: A002
        """Mark a pending message as failed with ``error``.

        Raises:
            MessageNotFound: no visible message has this id.
            ConflictError: the message is not pending.
        """
        return await self._settle(id, {"status": "error", "error": self._text("error", error)})

    async def transcript(self, conversation_id: Id) -> list[Message]:
        """Every live message of a conversation, in ``seq`` order.

        Raises:
            ConversationNotFound: no visible conversation has this id.
        """
        cid = parse_id("conversation_id", conversation_id)
        async with self._db.transaction() as conn:
            await q.get_conversation(conn, self.principal, cid)
            rows = await conn.execute(
                select(*q.MESSAGE_COLUMNS)
                .where(M.chat_conversation_id == cid, M.deleted_at.is_(None))
                .order_by(M.seq)
            )
            return [q.message_from_row(row) for row in rows]

    # -- internals -----------------------------------------------------------------------------

    async def _settle(self, id: Id, values: dict[str, Any], *, allow_model: bool = False) -> Message:  # noqa: A002
        mid = parse_id("message_id", id)
        values["updated_at"] = q.now()
        async with self._db.transaction(write=True) as conn:
            message = await q.get_message(conn, self.principal, mid, lock=True)
            if message.status != "pending":
                raise ConflictError(f"message {mid} is {message.status}, not pending")
            if allow_model and message.role != "assistant":
                raise InvalidInputError("model", f"a {message.role} message has no model")
            await conn.execute(update(messages).where(M.id == mid).values(values))
            await q.refresh_summary(conn, message.conversation_id, values["updated_at"])
        return Message.model_validate({**message.model_dump(), **values})

    async def _stored_keys(self, conn: Any, history_id: UUID, keys: list[str]) -> dict[str | None, Message]:
        if not keys:
            return {}
        rows = await conn.execute(
            select(*q.MESSAGE_COLUMNS).where(M.chat_history_id == history_id, M.key.in_(keys))
        )
        return {row.key: q.message_from_row(row) for row in rows}

    async def _insert(self, conn: Any, history: History, batch: list[NewMessage]) -> list[Message]:
        cid = history.conversation_id
        last_seq = (await conn.execute(select(C.last_seq).where(C.id == cid))).scalar_one()
        when = q.now()
        rows = [
            {
                "id": new_id(),
                "chat_conversation_id": cid,
                "chat_history_id": history.id,
                "seq": last_seq + i,
                "role": m.role,
                "content": m.text,
                "parts": None if m.parts is None else _dump_parts(m.parts),
                "model": (m.model or history.model) if m.role == "assistant" else None,
                "status": m.status,
                "error": None,
                "usage": m.usage,
                "metadata": m.metadata,
                "native": None if m.native is None else m.native.model_dump(mode="json"),
                "key": m.key,
                "created_at": when,
                "updated_at": when,
            }
            for i, m in enumerate(batch, start=1)
        ]
        await conn.execute(insert(messages), rows)
        await conn.execute(
            update(conversations)
            .where(C.id == cid)
            .values(
                last_seq=last_seq + len(rows),
                message_count=C.message_count + len(rows),
                last_message_preview=rows[-1]["content"][: q.PREVIEW_CHARS],
                updated_at=when,
            )
        )
        return [
            Message.model_construct(
                **{
                    **row,
                    "conversation_id": cid,
                    "history_id": history.id,
                    "parts": m.parts,
                    "native": m.native,
                }
            )
            for row, m in zip(rows, batch, strict=True)
        ]

    def _batch(self, messages: Sequence[NewMessage | Mapping[str, Any]]) -> list[NewMessage]:
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
            raise InvalidInputError("messages", "must be a list of messages")
        if len(messages) > self._limits.messages_per_call:
            raise InvalidInputError("messages", f"at most {self._limits.messages_per_call} per call")
        batch = [NewMessage.parse(m, f"messages.{i}") for i, m in enumerate(messages)]
        keys = [m.key for m in batch if m.key is not None]
        if len(set(keys)) != len(keys):
            raise InvalidInputError("messages", "two messages in one call share a key")
        for i, m in enumerate(batch):
            self._check_content(m.content, f"messages.{i}.content")
        return batch

    def _check_content(self, content: str | list[ContentPart], field: str) -> None:
        if len(flatten_content(content)) > self._limits.content:
            raise InvalidInputError(field, f"longer than {self._limits.content} characters")
        for j, part in enumerate(() if isinstance(content, str) else content):
            if getattr(part, "data_size", 0) > self._limits.inline_bytes:
                raise InvalidInputError(f"{field}.{j}.data", f"larger than {self._limits.inline_bytes} bytes")

    def _title(self, title: str | None) -> str | None:
        if title is None:
            return None
        if not isinstance(title, str):
            raise InvalidInputError("title", "must be a string")
        if len(title) > self._limits.title:
            raise InvalidInputError("title", f"longer than {self._limits.title} characters")
        return check_text("title", title)

    def _text(self, field: str, value: str | None) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > self._limits.content:
            raise InvalidInputError(field, f"must be a string of at most {self._limits.content} characters")
        return check_text(field, value)

    def _page_size(self, limit: int) -> int:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= self._limits.list_limit:
            raise InvalidInputError("limit", f"must be an integer from 1 to {self._limits.list_limit}")
        return limit


def _after(column: Any, id_column: Any, value: datetime, last_id: UUID) -> Any:
    return or_(column < value, and_(column == value, id_column < last_id))


def _timestamp(value: object) -> datetime:
    try:
        if isinstance(value, str):
            return datetime.fromisoformat(value)
    except ValueError:
        pass
    raise InvalidInputError("cursor", "is not a cursor from this listing")


def _model_name(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise InvalidInputError(field, "must be a non-empty model name of at most 200 characters")
    return check_text(field, value)


def _prompts(prompts: Sequence[str] | None) -> list[str] | None:
    if prompts is None:
        return None
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise InvalidInputError("system_prompts", "must be a list of strings")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise InvalidInputError(f"system_prompts.{i}", "must be a string")
        check_text(f"system_prompts.{i}", prompt)
    return list(prompts)


def _dump_parts(parts: Sequence[ContentPart]) -> list[dict[str, Any]]:
    return [part.model_dump(mode="json", exclude_none=True) for part in parts]
