"""A search's filters answer as if checked before the page, for every principal and filter."""

from __future__ import annotations

import itertools
import uuid

from chatmemory import ChatMemory, NewMessage, Principal
from chatmemory._search import _filters
from chatmemory.errors import ChatMemoryError


async def _answer(memory: ChatMemory, who: Principal, query: str, **filters: object) -> object:
    try:
        page = await memory.scoped(who).search_messages(query, **filters)  # type: ignore[arg-type]
    except ChatMemoryError as exc:
        return type(exc).__name__
    return sorted(h.message.content for h in page.items)


async def _old_answer(memory: ChatMemory, who: Principal, query: str, **filters: object) -> object:
    cid, hid = filters.get("conversation_id"), filters.get("history_id")
    try:
        await memory._db.run(_filters(who, cid, hid))  # type: ignore[arg-type]
    except ChatMemoryError as exc:
        return type(exc).__name__
    return await _answer(memory, who, query, **filters)


async def test_filters_answer_as_if_checked_first(memory: ChatMemory) -> None:
    alice = memory.scoped(Principal("alice", tenant="t"))
    convs, hists = {}, {}
    for name in ("live", "archived", "deleted", "other", "hdel"):
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        batch = [NewMessage("user", f"hotel {name}"), NewMessage("assistant", "hotel")]
        await alice.append_messages(run.id, batch)
        convs[name], hists[name] = conv.id, run.id
    await alice.search_messages("hotel")
    await alice.update_conversation(convs["archived"], archived=True)
    await alice.delete_conversation(convs["deleted"])
    await alice.delete_history(hists["hdel"])
    # hdel's conversation gets a live history too
    live2 = await alice.start_history(convs["hdel"], model="m")
    await alice.append_messages(live2.id, [NewMessage("user", "hotel two")])
    hists["hdel-live"] = live2.id
    convs["missing"], hists["missing"] = uuid.uuid4(), uuid.uuid4()
    await alice.search_messages("hotel")
    principals = [
        Principal("alice", tenant="t"),
        Principal("bob", tenant="t"),
        Principal("root", tenant="t", admin=True),
        Principal("alice"),
        Principal("root", admin=True),
        Principal("alice", tenant="u"),
    ]
    differ = []
    for who, query, role, c, h in itertools.product(
        principals, ["hotel", "paris", ""], [None, "user"], [None, *convs], [None, *hists]
    ):
        filters = {
            "conversation_id": None if c is None else convs[c],
            "history_id": None if h is None else hists[h],
            "role": role,
        }
        old = await _old_answer(memory, who, query, **filters)
        new = await _answer(memory, who, query, **filters)
        if old != new:
            differ.append((who, query, role, c, h, old, new))
    assert differ == []


async def test_later_pages_answer_as_if_checked_first(memory: ChatMemory) -> None:
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    await alice.append_messages(run.id, [NewMessage("user", f"hotel {i}") for i in range(3)])
    first = await alice.search_messages("hotel", conversation_id=conv.id, history_id=run.id, limit=2)
    assert first.next_cursor
    await alice.delete_history(run.id)
    filters = {"conversation_id": conv.id, "history_id": run.id, "cursor": first.next_cursor, "limit": 2}
    assert await _answer(memory, Principal("alice"), "hotel", **filters) == "HistoryNotFound"
    await alice.delete_conversation(conv.id)
    assert await _answer(memory, Principal("alice"), "hotel", **filters) == "ConversationNotFound"
