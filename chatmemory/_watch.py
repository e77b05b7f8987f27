"""Watching committed changes as they happen."""

from __future__ import annotations

from collections.abc import AsyncIterator

from chatmemory import _changes
from chatmemory._scope_base import Id, ScopeBase
from chatmemory._validation import parse_id
from chatmemory.errors import ConversationNotFound, StorageError
from chatmemory.models import ChangeEvent


class WatchOps(ScopeBase):
    async def change_cursor(self, conversation_id: Id | None = None) -> str:
        """The position after every change committed so far: take it, load what you show,
        then ``watch(after=...)`` from it, and no change in between is missed.

        Raises:
            ConversationNotFound: ``conversation_id`` names no visible conversation.
        """
        cid = None if conversation_id is None else parse_id("conversation_id", conversation_id)
        position = await self._db.run(_changes.head(self.principal, cid), rows=1)
        return _changes.cursor(*position, await self._store())

    async def _store(self) -> str:
        """This database's identity in cursors, read once per store (it never changes)."""
        hub = self._db.changes
        if hub.store is None:
            hub.store = await self._db.run(_changes.store(), rows=1)
        return hub.store

    async def watch(
        self, conversation_id: Id | None = None, *, after: str | None = None
    ) -> AsyncIterator[ChangeEvent]:
        """The changes of a conversation (or, with ``None``, of every conversation this
        principal can see, those started later included), in commit order, as they commit.

        Starts at the changes committed after the call, or after the event whose ``cursor``
        is ``after``: a reconnect with the last cursor seen gets every later change once.
        Only committed changes appear. A deleted conversation's watch ends, after its
        ``conversation.deleted`` event, with ``ConversationNotFound``; a watch of every
        conversation goes on.

        Raises:
            ConversationNotFound: the conversation is not visible, or is deleted.
            InvalidInputError: ``after`` is not a cursor from a change event of this database,
                or changes after it were purged since (watching every conversation, or one
                begun after it, which may have been restored after a purge): reload, then
                watch from a new cursor.
            StorageError: the store was closed, or the database failed.
        """
        cid = None if conversation_id is None else parse_id("conversation_id", conversation_id)
        parsed = None if after is None else _changes.parse_cursor(after)
        store = await self._store()
        db = self._db
        # Subscribed before the first read, so a change committed after that read wakes it.
        waiter = db.changes.subscribe(cid)
        if waiter is None:
            raise StorageError("the store is closed")
        try:
            if parsed is None:
                position = await db.run(_changes.head(self.principal, cid), rows=1)
            else:
                position = parsed[:2]
            # A cursor of another database is refused by the first read, as one ahead of the head is.
            foreign = parsed is not None and parsed[2] not in (None, store)
            more = False
            while True:
                waiter.clear()
                read = _changes.read(self.principal, cid, position, counted=not more, foreign=foreign)
                rows, following, more = await db.run(read)
                if cid is None and not rows and following > position[0]:
                    # Woken for changes of conversations it cannot see: they wake it no more.
                    waiter.hide(await db.run(_changes.hidden(self.principal, position[0], following)))
                for event in _changes.events(rows, position, db.is_sqlite, store):
                    yield event
                    if cid is not None and event.kind == "conversation.deleted":
                        raise ConversationNotFound(cid)
                if following > position[0]:
                    position = (following, 0)
                if not more:
                    await waiter.wait(db.changes.timeout())
                if db.changes.closed:
                    raise StorageError("the store is closed")
        finally:
            db.changes.unsubscribe(waiter)
