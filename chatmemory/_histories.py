"""History operations of a scope."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import EllipsisType
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import and_, insert, update

from chatmemory import _queries as q
from chatmemory._ids import new_id
from chatmemory._schema import conversations, histories, messages
from chatmemory._scope_base import Id, ScopeBase
from chatmemory._validation import check_object, model_name, parse_id, prompts
from chatmemory.errors import ConflictError, InvalidInputError
from chatmemory.models import (
    History,
    HistoryDetail,
)

C, H, M = q.C, q.H, q.M
_FINISHED = ("completed", "failed", "cancelled")


class HistoryOps(ScopeBase):
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
            "model": model_name("model", model),
            "system_prompts": prompts(system_prompts),
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
        id: Id,
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
        return await self._change_running(hid, values)

    async def update_history(
        self,
        id: Id,
        *,
        model: str | EllipsisType = ...,
        system_prompts: Sequence[str] | EllipsisType | None = ...,
        metadata: Mapping[str, Any] | EllipsisType | None = ...,
    ) -> History:
        """Change a running history's model, system prompts or metadata (``...`` leaves one as is).

        Adapters use this when a run's driver is only known after it starts. Messages already
        stored keep the model they were stored with.

        Raises:
            HistoryNotFound: no visible history has this id.
            ConflictError: the history is finished.
            InvalidInputError: empty model, or malformed prompts or metadata.
        """
        hid = parse_id("history_id", id)
        values: dict[str, Any] = {"updated_at": q.now()}
        if model is not ...:
            values["model"] = model_name("model", model)
        if system_prompts is not ...:
            values["system_prompts"] = prompts(system_prompts)
        if metadata is not ...:
            values["metadata"] = check_object("metadata", metadata)
        return await self._change_running(hid, values)

    async def _change_running(self, hid: UUID, values: dict[str, Any]) -> History:
        async with self._db.transaction(write=True) as conn:
            history = await q.get_history(conn, self.principal, hid, lock=True)
            if history.status != "running":
                raise ConflictError(f"history {hid} is already {history.status}")
            await conn.execute(update(histories).where(H.id == hid).values(values))
        return history.model_copy(update=values)

    async def get_history(self, id: Id, *, messages: bool = True) -> HistoryDetail:
        """A history, with its messages in order unless ``messages=False``.

        Raises:
            HistoryNotFound: no visible history has this id.
        """
        hid = parse_id("history_id", id)
        async with self._db.transaction() as conn:
            history = await q.get_history(conn, self.principal, hid)
            loaded = (await q.history_messages(conn, [hid]))[hid] if messages else None
        return HistoryDetail(**history.model_dump(), messages=loaded)

    async def delete_history(self, id: Id) -> None:
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
