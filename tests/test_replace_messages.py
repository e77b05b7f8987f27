"""``replace_messages``: the newest messages of a conversation swapped for others in one transaction."""

from __future__ import annotations

import asyncio

import pytest

from chatmemory import ConflictError, ConversationNotFound, InvalidInputError, NewMessage
from chatmemory.scope import Scope


async def _conversation(chat: Scope, texts: list[str]) -> tuple[str, list[str]]:
    conv = await chat.start_conversation()
    run = await chat.start_history(conv.id, model="m")
    stored = await chat.append_messages(run.id, [NewMessage("user", t) for t in texts])
    await chat.finish_history(run.id, usage={"input_tokens": 3})
    return str(conv.id), [str(m.id) for m in stored]


async def test_the_tail_is_replaced_and_histories_keep_their_provenance(alice: Scope) -> None:
    cid, ids = await _conversation(alice, ["a", "b", "c"])
    summary = await alice.start_history(cid, model="summariser")
    added = await alice.replace_messages(
        cid, replacing=ids[1:], history_id=summary.id, messages=[NewMessage("assistant", "b+c")]
    )
    assert [m.content for m in added] == ["b+c"]
    assert [m.content for m in await alice.transcript(cid)] == ["a", "b+c"]
    first = (await alice.get_conversation(cid)).histories[0]
    assert (first.model, first.status, first.usage) == ("m", "completed", {"input_tokens": 3})
    assert (await alice.list_conversations()).items[0].message_count == 2


async def test_a_stale_tail_changes_nothing(alice: Scope) -> None:
    cid, ids = await _conversation(alice, ["a", "b"])
    summary = await alice.start_history(cid, model="s")
    with pytest.raises(ConflictError):
        await alice.replace_messages(
            cid, replacing=ids[:1], history_id=summary.id, messages=[NewMessage("user", "x")]
        )
    with pytest.raises(ConflictError):
        await alice.replace_messages(cid, replacing=[*ids, ids[0]])
    assert [m.content for m in await alice.transcript(cid)] == ["a", "b"]


async def test_racing_removals_of_the_newest_message_succeed_once(alice: Scope) -> None:
    cid, ids = await _conversation(alice, ["a", "b"])
    outcomes = await asyncio.gather(
        *(alice.replace_messages(cid, replacing=ids[1:]) for _ in range(2)), return_exceptions=True
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["ConflictError", "list"]
    assert [m.content for m in await alice.transcript(cid)] == ["a"]


async def test_bad_calls_are_refused(alice: Scope, bob: Scope) -> None:
    cid, ids = await _conversation(alice, ["a"])
    with pytest.raises(InvalidInputError):
        await alice.replace_messages(cid, replacing=ids, messages=[NewMessage("user", "x")])
    with pytest.raises(ConversationNotFound):
        await bob.replace_messages(cid, replacing=ids)
    other, _ = await _conversation(alice, ["elsewhere"])
    elsewhere = await alice.start_history(other, model="m")
    with pytest.raises(InvalidInputError, match="not in that conversation"):
        await alice.replace_messages(
            cid, replacing=ids, history_id=elsewhere.id, messages=[NewMessage("user", "x")]
        )
    assert [m.content for m in await alice.transcript(cid)] == ["a"]


@pytest.mark.parametrize("replacing", [None, 5, "a-message-id", {"id": 1}])
async def test_replacing_that_is_not_a_list_of_ids_is_refused(alice: Scope, replacing: object) -> None:
    cid, _ = await _conversation(alice, ["a"])
    with pytest.raises(InvalidInputError) as caught:
        await alice.replace_messages(cid, replacing=replacing)  # type: ignore[arg-type]
    assert caught.value.field == "replacing"
    assert [m.content for m in await alice.transcript(cid)] == ["a"]


async def test_a_replacement_that_changes_nothing_leaves_the_conversation_as_it_was(alice: Scope) -> None:
    """Nothing replaced and every key stored already: no change, so no change event and the
    conversation is not touched."""
    cid, _ = await _conversation(alice, ["a"])
    run = await alice.start_history(cid, model="m")
    await alice.append_messages(run.id, [NewMessage("user", "b", key="k")])
    before = await alice.get_conversation(cid)
    cursor = await alice.change_cursor(cid)
    again = await alice.replace_messages(
        cid, replacing=[], history_id=run.id, messages=[NewMessage("user", "b", key="k")]
    )
    assert [m.content for m in again] == ["b"]
    await alice.replace_messages(cid, replacing=[])
    assert (await alice.get_conversation(cid)).updated_at == before.updated_at
    assert await alice.change_cursor(cid) == cursor
