"""Removing soft-deleted data for good."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Delete, and_, delete, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from chatmemory import _queries as q
from chatmemory._schema import conversations, histories, messages
from chatmemory._scope_base import ScopeBase
from chatmemory._validation import utc_time
from chatmemory.errors import InvalidInputError

__all__ = ["PurgeCounts", "PurgeOps"]

C, H, M = q.C, q.H, q.M


class PurgeCounts(BaseModel):
    """How many rows a purge removed (messages include those of removed histories)."""

    model_config = ConfigDict(frozen=True)

    conversations: int = 0
    histories: int = 0
    messages: int = 0


class PurgeOps(ScopeBase):
    async def purge_deleted(self, *, deleted_before: datetime) -> PurgeCounts:
        """Hard-delete what was soft-deleted before ``deleted_before``, in this admin's tenant.

        Removes deleted conversations with all their histories and messages, deleted
        histories with their messages, and deleted messages, in one transaction. Search
        indexes follow in the same transaction.

        Raises:
            InvalidInputError: the principal is not an admin, or the time has no timezone.
        """
        if not self.principal.admin:
            raise InvalidInputError("principal", "purging needs an admin principal")
        deleted_before = utc_time("deleted_before", deleted_before)
        tenant = (
            C.tenant_id.is_(None) if self.principal.tenant is None else C.tenant_id == self.principal.tenant
        )
        in_tenant = select(C.id).where(tenant)
        old_conversations = select(C.id).where(tenant, C.deleted_at < deleted_before)
        old_histories = select(H.id).where(
            H.chat_conversation_id.in_(in_tenant), H.deleted_at < deleted_before
        )
        doomed_histories = or_(H.chat_conversation_id.in_(old_conversations), H.id.in_(old_histories))
        doomed_messages = or_(
            M.chat_conversation_id.in_(old_conversations),
            M.chat_history_id.in_(old_histories),
            and_(M.chat_conversation_id.in_(in_tenant), M.deleted_at < deleted_before),
        )

        # Children first, each delete counted; nothing is left for the cascades.
        deletes = [
            delete(messages).where(doomed_messages),
            delete(histories).where(doomed_histories),
            delete(conversations).where(C.id.in_(old_conversations)),
        ]
        sqlite = self._db.is_sqlite

        async def write(conn: AsyncConnection) -> list[int]:
            if sqlite:  # the one writer: nothing is deleted between these statements
                return [int((await conn.execute(statement)).rowcount) for statement in deletes]
            return await _delete_at_once(conn, deletes)

        removed = await self._db.write_apart(write)
        return PurgeCounts(messages=removed[0], histories=removed[1], conversations=removed[2])


async def _delete_at_once(conn: AsyncConnection, deletes: list[Delete]) -> list[int]:
    """The deletes as one PostgreSQL statement, counting the rows each removed. Its parts share
    one snapshot: a conversation or history deleted while it runs is not purged, where statements
    of their own (each seeing what committed before it) would remove it in a later one, and its
    messages with it through the cascade, uncounted."""
    parts = [d.returning(literal(1)).cte(f"removed_{i}") for i, d in enumerate(deletes)]
    counts = select(*(select(func.count()).select_from(part).scalar_subquery() for part in parts))
    return list((await conn.execute(counts)).one())
