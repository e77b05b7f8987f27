"""chatmemory itself, through its public scoped API only."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks._data import MODEL, Msg
from benchmarks._system import EVERYTHING, SEARCH, Family, SchemaConversation
from benchmarks._targets import Store
from chatmemory import ChatMemory, NewMessage, Principal
from chatmemory.scope import Scope


class ChatMemorySystem:
    """``ChatMemory.open(url)`` and one ``Scope`` per owner."""

    name = "chatmemory"
    family: Family = "chatmemory"
    abilities = EVERYTHING | {SEARCH}
    shares_schema = True

    def __init__(self) -> None:
        self._memory: ChatMemory | None = None
        self._scopes: dict[str, Scope] = {}

    async def start(self, store: Store) -> None:
        self._memory = await ChatMemory.open(store.url)

    def _scope(self, owner: str) -> Scope:
        scope = self._scopes.get(owner)
        if scope is None:
            assert self._memory is not None
            scope = self._scopes[owner] = self._memory.scoped(Principal(owner))
        return scope

    async def conversation(self, owner: str) -> SchemaConversation:
        scope = self._scope(owner)
        conv = await scope.start_conversation("benchmark")
        run = await scope.start_history(conv.id, model=MODEL)
        return SchemaConversation(owner, conv.id, run.id)

    async def append(self, conversation: SchemaConversation, batch: Sequence[Msg]) -> None:
        await self._scope(conversation.owner).append_messages(
            conversation.history_id, [NewMessage(m.role, m.text) for m in batch]
        )

    async def read_last(self, conversation: SchemaConversation, n: int) -> list[str]:
        page = await self._scope(conversation.owner).list_messages(
            conversation_id=conversation.conversation_id, newest_first=True, limit=n
        )
        return [m.content for m in reversed(page.items)]

    async def read_all(self, conversation: SchemaConversation) -> list[str]:
        messages = await self._scope(conversation.owner).transcript(conversation.conversation_id)
        return [m.content for m in messages]

    async def recent(self, owner: str, n: int) -> list[str | None]:
        page = await self._scope(owner).list_conversations(limit=n)
        return [c.last_message_preview for c in page.items]

    async def search(self, owner: str, query: str) -> list[str]:
        page = await self._scope(owner).search_messages(query, limit=20)
        return [hit.message.content for hit in page.items]

    async def stop(self) -> None:
        if self._memory is not None:
            await self._memory.close()
        self._memory = None
        self._scopes.clear()
