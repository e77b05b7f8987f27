"""The conversation a new chat-store key starts: one, however many stores start it at once.

Its id is derived from the principal, the key and a generation, and it is created by
importing an empty conversation with exactly that id, which the store refuses when the id
is taken. Two stores (or processes) writing a new key at once so start one conversation,
not one each. Deleting the key's conversation leaves its id taken: the key's next
conversation is the next generation, which its metadata records (``GENERATION_FIELD``), so a
store that finds it by listing knows where the key's next one is looked for.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from chatmemory import ConflictError, ConversationNotFound, Principal, Scope

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/chatmemory/chatmemory-llamaindex")
_GENERATIONS = 100_000  # times one key can be deleted and started again

GENERATION_FIELD = "llamaindex_generation"
"""The conversation metadata field holding its key's generation, from the second one on."""


def key_id(principal: Principal, key: str, generation: int = 0) -> uuid.UUID:
    """The id of the conversation ``key`` starts for ``principal`` in ``generation``."""
    return uuid.uuid5(_NAMESPACE, json.dumps([principal.tenant, principal.id, key, generation]))


def generation_of(metadata: dict[str, Any]) -> int | None:
    """The generation a conversation's metadata records, if it records a valid one."""
    generation = metadata.get(GENERATION_FIELD)
    if isinstance(generation, int) and not isinstance(generation, bool) and 0 < generation < _GENERATIONS:
        return generation
    return None


async def live(chat: Scope, cid: uuid.UUID) -> bool:
    """Whether the principal sees a conversation with this id (not deleted)."""
    try:
        await chat.get_tail(cid, limit=0)
    except ConversationNotFound:
        return False
    return True


async def claim(chat: Scope, key: str, metadata: dict[str, Any], start: int = 0) -> tuple[uuid.UUID, int]:
    """The key's conversation of the first generation not deleted from ``start`` on (every one
    before it known deleted), started if nobody has yet; and its generation.

    Raises:
        ConflictError: the key was deleted and started again too many times.
    """
    for generation in range(start, _GENERATIONS):
        cid = key_id(chat.principal, key, generation)
        if await live(chat, cid):
            return cid, generation
        stamp = datetime.now(UTC).isoformat()
        conversation: dict[str, Any] = {
            "id": str(cid),
            "owner_id": chat.principal.id,
            "tenant_id": chat.principal.tenant,
            "title": None,
            "metadata": {**metadata, GENERATION_FIELD: generation} if generation else metadata,
            "archived_at": None,
            "created_at": stamp,
            "updated_at": stamp,
        }
        try:
            await chat.import_conversation(
                {"format_version": 1, "conversation": conversation, "histories": []}
            )
        except ConflictError:
            if await live(chat, cid):
                return cid, generation  # another store started it first
            continue  # a deleted conversation of the key
        return cid, generation
    raise ConflictError(f"key {key!r}: started again too many times")
