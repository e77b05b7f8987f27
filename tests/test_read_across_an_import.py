"""Reads of a conversation's messages while another store imports that very conversation.

An import with the document's own ids (a conversation restored after a purge, or moved from
another store) makes a conversation visible together with its messages, in one transaction:
no moment of the database has it visible without them. A read that runs across that commit
answers the conversation as not found (before) or with its messages (after), never as an
empty conversation, which a resuming agent takes for a new one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatmemory import ChatMemory, ConversationNotFound, Principal
from chatmemory.scope import Scope
from tests.transactions import committed_before

# The statement that finds a visible conversation by id (``sql.get_conversation``).
FIND_CONVERSATION = "c.last_message_preview FROM chat_conversations c WHERE c.id ="


async def _exported_then_purged(alice: Scope, admin: Scope) -> dict[str, Any]:
    """A conversation of 3 complete messages, exported, then deleted and purged: its document
    imports with its own ids."""
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [{"role": "user", "content": str(i)} for i in range(3)])
    document = await alice.export_conversation(conv.id)
    await alice.delete_conversation(conv.id)
    await admin.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(seconds=1))
    return document


READS = {
    "get_context": lambda chat, cid: chat.get_context(cid),
    "transcript": lambda chat, cid: chat.transcript(cid),
    "list_messages": lambda chat, cid: chat.list_messages(conversation_id=cid),
}


@pytest.mark.parametrize("read", list(READS))
async def test_a_conversation_imported_while_read_is_whole_or_not_found(
    memory: ChatMemory, alice: Scope, admin: Scope, db_url: str, read: str
) -> None:
    document = await _exported_then_purged(alice, admin)
    cid = document["conversation"]["id"]
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))
        with committed_before(memory, FIND_CONVERSATION, lambda: other.import_conversation(document)) as done:
            try:
                answer = await READS[read](alice, cid)
            except ConversationNotFound:
                answer = None
    if answer is None:
        return
    messages = {"get_context": lambda: answer.messages, "list_messages": lambda: answer.items}.get(
        read, lambda: answer
    )()
    # Found after the import committed: with the messages it was imported with.
    assert [m.content for m in messages] == ["0", "1", "2"], (done, messages)


async def test_the_context_of_a_conversation_one_may_not_see_reads_none_of_its_messages(
    memory: ChatMemory, alice: Scope, bob: Scope
) -> None:
    """SECURITY.md: a context filters by ``visible(principal)`` or authorizes the parent first.
    Asked by someone who may not see the conversation, no statement reads its messages
    unfiltered (which would make the not-found answer cost what the conversation holds)."""
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [{"role": "user", "content": str(i)} for i in range(3)])
    sent: list[str] = []
    memory._db.set_trace(
        lambda stmt: sent.append((stmt.sql.sqlite if memory._db.is_sqlite else stmt.sql.postgres) or "")
    )
    try:
        with pytest.raises(ConversationNotFound):
            await bob.get_context(conv.id)
    finally:
        memory._db.set_trace(None)
    unfiltered = [text for text in sent if "FROM chat_messages" in text and "chat_conversations" not in text]
    assert not unfiltered, unfiltered
