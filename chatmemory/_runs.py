"""Recording a whole run in one call: conversation (new or existing), history, messages, finish."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from chatmemory import _queries as q
from chatmemory._conversations import insert
from chatmemory._histories import change_running, start
from chatmemory._ids import new_id
from chatmemory._messages import MessageOps, append, in_batch_order
from chatmemory._plan import Plan, Row
from chatmemory._scope_base import Id
from chatmemory._validation import check_object, model_name, parse_id, prompts
from chatmemory.errors import InvalidInputError
from chatmemory.models import History, Message, NewMessage
from chatmemory.principal import Principal

__all__ = ["RecordedRun", "RunOps"]

_FINISHED = ("completed", "failed", "cancelled")


class RecordedRun(BaseModel):
    """What ``record_run`` wrote: the conversation (``created`` when the call started it),
    the finished history and its messages in order."""

    model_config = ConfigDict(frozen=True)

    conversation_id: UUID
    created: bool
    history: History
    messages: list[Message]


class RunOps(MessageOps):
    async def record_run(
        self,
        conversation_id: Id | None = None,
        *,
        model: str,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        status: Literal["completed", "failed", "cancelled"] = "completed",
        title: str | None = None,
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
        system_prompts: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RecordedRun:
        """Record one finished run, all or nothing, in one transaction.

        Starts a conversation titled ``title`` unless ``conversation_id`` names one, starts a
        history driven by ``model``, appends ``messages`` and finishes the history with
        ``status``. Either everything is written or nothing is.

        Raises:
            ConversationNotFound: ``conversation_id`` names no visible conversation.
            InvalidInputError: a malformed argument or message; nothing is written.
        """
        if status not in _FINISHED:
            raise InvalidInputError("status", f"must be one of {', '.join(_FINISHED)}")
        if conversation_id is not None and title is not None:
            raise InvalidInputError(
                "title", "is only for a new conversation; leave it out with conversation_id"
            )
        batch = self._batch(messages)
        cid = None if conversation_id is None else parse_id("conversation_id", conversation_id)
        when = q.now()
        history_id = new_id()
        started = {
            "id": history_id,
            "model": model_name("model", model),
            "system_prompts": prompts(system_prompts),
            "metadata": check_object("metadata", metadata),
            "status": "running",
            "created_at": when,
            "updated_at": when,
        }
        finish = {
            "status": status,
            "usage": check_object("usage", usage),
            "error": self._text("error", error),
            "finished_at": when,
        }
        new_title = self._title(title)
        if cid is None:
            cid = new_id()
            conversation: dict[str, Any] | None = {
                "id": cid,
                "owner_id": self.principal.id,
                "tenant_id": self.principal.tenant,
                "title": new_title,
                "metadata": {},
                "created_at": when,
            }
        else:
            conversation = None
        history_values = {**started, "conversation_id": cid}
        plan = _record(self.principal, conversation, history_values, batch, finish, not self._db.is_sqlite)
        stored, added = await self._db.run(plan, write=True)
        history = History.model_validate({**history_values, **finish})
        return RecordedRun(
            conversation_id=cid,
            created=conversation_id is None,
            history=history,
            messages=in_batch_order(batch, stored, added, self._db.is_sqlite),
        )


def _record(
    principal: Principal,
    conversation: dict[str, Any] | None,
    history: dict[str, Any],
    batch: list[NewMessage],
    finish: dict[str, Any],
    one_statement: bool,
) -> Plan[tuple[list[Row], list[Message]]]:
    """A new conversation (when given), a history started, appended to and finished."""
    if conversation is not None:
        yield from insert(conversation)
    yield from start(principal, history)
    when = history["created_at"]
    stored, added = yield from append(principal, history["id"], batch, when, one_statement=one_statement)
    yield from change_running(principal, history["id"], {**finish, "updated_at": when})
    return stored, added
