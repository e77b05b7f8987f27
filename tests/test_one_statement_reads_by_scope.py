"""The one-statement reads (a conversation with its histories, a history with its messages, a
tail, a context) for each kind of principal: with or without a tenant, admin or not. Each
answers what the reads of several statements answer, field for field, to whoever may see
the conversation, and not-found to whoever may not."""

from __future__ import annotations

from typing import Any

import pytest

from chatmemory import ChatMemory, ConversationNotFound, HistoryNotFound, Principal
from chatmemory.scope import Scope

# (owner, a reader of the owner's conversation, one who may not see it)
PRINCIPALS = {
    "no tenant": (Principal("alice"), Principal("alice"), Principal("bob")),
    "no tenant, admin": (Principal("alice"), Principal("root", admin=True), Principal("alice", tenant="t")),
    "tenant": (Principal("tina", tenant="t"), Principal("tina", tenant="t"), Principal("tina", tenant="u")),
    "tenant, admin": (
        Principal("tina", tenant="t"),
        Principal("boss", tenant="t", admin=True),
        Principal("boss", tenant="u", admin=True),
    ),
}


async def _filled(owner: Scope) -> tuple[Any, Any]:
    conv = await owner.start_conversation(title="t", metadata={"k": [1, 2.5, None], "s": "\u00e9"})
    await owner.update_conversation(conv.id, pinned=True)
    gone = await owner.start_history(conv.id, model="m")
    await owner.append_messages(gone.id, [{"role": "user", "content": "gone"}])
    await owner.delete_history(gone.id)
    done = await owner.start_history(conv.id, model="m", system_prompts=["be brief"], metadata={"a": 1})
    await owner.append_messages(
        done.id,
        [
            {"role": "user", "content": "q", "metadata": {"x": {"y": "z"}}, "key": "k1"},
            {"role": "assistant", "content": "a", "model": "m2", "usage": {"input_tokens": 3}},
        ],
    )
    await owner.finish_history(done.id, usage={"input_tokens": 3})
    running = await owner.start_history(conv.id, model="m")
    await owner.append_messages(running.id, [{"role": "user", "content": "more"}])
    return conv, done


@pytest.mark.parametrize("kind", list(PRINCIPALS))
async def test_one_statement_reads_for_each_kind_of_principal(memory: ChatMemory, kind: str) -> None:
    owner_p, reader_p, stranger_p = PRINCIPALS[kind]
    owner, reader, stranger = (memory.scoped(p) for p in (owner_p, reader_p, stranger_p))
    conv, done = await _filled(owner)

    detail = await reader.get_conversation(conv.id)
    full = await reader.get_conversation(conv.id, messages=True)
    assert detail.model_dump(exclude={"histories"}) == full.model_dump(exclude={"histories"})
    assert [h.model_dump(exclude={"messages"}) for h in detail.histories] == [
        h.model_dump(exclude={"messages"}) for h in full.histories
    ]
    assert len(detail.histories) == 2 and detail.message_count == 3 and detail.pinned_at is not None
    assert detail.metadata == {"k": [1, 2.5, None], "s": "\u00e9"}

    history = await reader.get_history(done.id)
    bare = await reader.get_history(done.id, messages=False)
    assert history.model_dump(exclude={"messages"}) == bare.model_dump(exclude={"messages"})
    transcript = await reader.transcript(conv.id)
    assert history.messages == [m for m in transcript if m.history_id == done.id]
    assert history.system_prompts == ["be brief"] and history.finished_at is not None

    tail = await reader.get_tail(conv.id, limit=2)
    assert tail.messages == transcript[-2:] and tail.last_seq == transcript[-1].seq
    assert tail.conversation.model_dump() == full.model_dump(exclude={"histories"})
    context = await reader.get_context(conv.id)
    assert [m.content for m in context.messages] == ["q", "a", "more"]

    for read in (
        lambda: stranger.get_conversation(conv.id),
        lambda: stranger.get_tail(conv.id),
        lambda: stranger.get_context(conv.id),
    ):
        with pytest.raises(ConversationNotFound):
            await read()
    with pytest.raises(HistoryNotFound):
        await stranger.get_history(done.id)

    await owner.delete_conversation(conv.id)
    with pytest.raises(HistoryNotFound):
        await reader.get_history(done.id)
    with pytest.raises(ConversationNotFound):
        await reader.get_conversation(conv.id)
