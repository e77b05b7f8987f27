"""An empty page of messages told from a conversation or history not found, every way it is asked."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from chatmemory import ChatMemory, ConversationNotFound, HistoryNotFound, InvalidInputError, NewMessage
from chatmemory.principal import Principal
from chatmemory.scope import Scope


def _outcome(error: BaseException | None, page: Any) -> tuple[Any, ...]:
    if error is None:
        return ("page", [m.content for m in page.items], page.has_more)
    if isinstance(error, InvalidInputError):
        return ("invalid", error.field, error.reason)
    return (type(error).__name__, getattr(error, "object_id", None) or str(error))


async def _ask(chat: Scope, **kw: Any) -> tuple[Any, ...]:
    try:
        page = await chat.list_messages(**kw)
    except (ConversationNotFound, HistoryNotFound, InvalidInputError) as error:
        return _outcome(error, None)
    return _outcome(None, page)


async def test_every_empty_or_missing_page(
    memory: ChatMemory, alice: Scope, bob: Scope, admin: Scope
) -> None:
    tenant = memory.scoped(Principal("alice", tenant="t1"))
    # alice: an empty conversation with an empty history, a conversation with messages.
    empty = (await alice.start_conversation("e")).id
    empty_h = (await alice.start_history(empty, model="m")).id
    full = (await alice.start_conversation("f")).id
    full_h = (await alice.start_history(full, model="m")).id
    await alice.append_messages(full_h, [NewMessage("user", str(i)) for i in range(3)])
    # a deleted history in alice's empty conversation, a deleted conversation with a history.
    gone_h = (await alice.start_history(empty, model="m")).id
    await alice.delete_history(gone_h)
    gone = (await alice.start_conversation("g")).id
    gone_gh = (await alice.start_history(gone, model="m")).id
    await alice.delete_conversation(gone)
    # bob's, and a tenant's.
    foreign = (await bob.start_conversation("b")).id
    foreign_h = (await bob.start_history(foreign, model="m")).id
    tenants = (await tenant.start_conversation("t")).id
    tenants_h = (await tenant.start_history(tenants, model="m")).id
    convs = [None, empty, full, gone, foreign, tenants]
    hists = [None, empty_h, full_h, gone_h, gone_gh, foreign_h, tenants_h]
    cursors = {}
    for cid, hid in [(full, None), (None, full_h), (full, full_h)]:
        for newest in (False, True):
            page = await alice.list_messages(
                conversation_id=cid, history_id=hid, limit=1, newest_first=newest
            )
            cursors[(cid, hid, newest)] = page.next_cursor
    seen = []
    for who, cid, hid, newest in itertools.product((alice, bob, admin, tenant), convs, hists, (False, True)):
        if cid is None and hid is None:
            continue
        for cursor in [None, *{c for (_, _, n), c in cursors.items() if n == newest}]:
            asked = {"conversation_id": cid, "history_id": hid, "cursor": cursor, "newest_first": newest}
            got = await _ask(who, limit=1, **asked)
            seen.append(((who.principal, cid, hid, newest, cursor), got))
    # What each answers, as when the parent was asked for in a statement of its own.
    sees_by = {
        "alice": {empty, full, empty_h, full_h},
        "bob": {foreign, foreign_h},
        "root": {empty, full, empty_h, full_h, foreign, foreign_h},
        "t1": {tenants, tenants_h},
    }
    of = {empty_h: empty, full_h: full, foreign_h: foreign, tenants_h: tenants, gone_h: empty, gone_gh: gone}
    listing_of = {c: (h, h2) for (h, h2, _), c in cursors.items()}
    for (principal, cid, hid, newest, cursor), got in seen:
        sees = sees_by[principal.tenant or principal.id]
        key = (principal, cid, hid, newest, cursor)
        if hid is not None:
            if hid not in sees:
                assert got == ("HistoryNotFound", hid), (key, got)
                continue
            if cid is not None and of[hid] != cid:
                assert got == ("invalid", "history_id", "is not in that conversation"), (key, got)
                continue
        elif cid not in sees:
            assert got == ("ConversationNotFound", cid), (key, got)
            continue
        if cursor is not None:
            c_of, h_of = listing_of[cursor]
            mine = ("h", hid) if hid is not None else ("c", cid)
            if (("h", h_of) if h_of is not None else ("c", c_of)) != mine:
                assert got == ("invalid", "cursor", "is not a cursor from this listing"), (key, got)
                continue
        assert got[0] == "page", (key, got)


@pytest.mark.parametrize("newest", [False, True])
@pytest.mark.parametrize("by", ["c", "h", "ch"])
async def test_a_cursor_past_what_is_left(alice: Scope, bob: Scope, by: str, newest: bool) -> None:
    cid = (await alice.start_conversation("t")).id
    hid = (await alice.start_history(cid, model="m")).id
    stored = await alice.append_messages(hid, [NewMessage("user", str(i)) for i in range(3)])
    kw: dict[str, Any] = {"conversation_id": cid if "c" in by else None}
    kw["history_id"] = hid if "h" in by else None
    first = await alice.list_messages(limit=1, newest_first=newest, **kw)
    assert first.next_cursor is not None
    for m in stored:
        await alice.delete_message(m.id)
    page = await alice.list_messages(limit=1, newest_first=newest, cursor=first.next_cursor, **kw)
    assert (page.items, page.has_more, page.next_cursor) == ([], False, None)
    missing = HistoryNotFound if "h" in by else ConversationNotFound
    with pytest.raises(missing):
        await bob.list_messages(limit=1, newest_first=newest, cursor=first.next_cursor, **kw)
    await alice.delete_history(hid) if "h" in by else await alice.delete_conversation(cid)
    with pytest.raises(missing):
        await alice.list_messages(limit=1, newest_first=newest, cursor=first.next_cursor, **kw)
