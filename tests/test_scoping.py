"""Owner-or-admin within a tenant, on every read, list and write; no existence oracle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chatmemory import (
    ChatMemory,
    ConversationNotFound,
    HistoryNotFound,
    MessageNotFound,
    NoPrincipalError,
    NotFoundError,
    Principal,
    use_principal,
)
from chatmemory._ids import new_id
from chatmemory.scope import Scope


async def _alice_data(alice: Scope) -> tuple[Any, Any, Any]:
    conv = await alice.start_conversation("secret plans")
    run = await alice.start_history(conv.id, model="m1")
    (msg,) = await alice.append_messages(
        run.id, [{"role": "user", "content": "the secret", "status": "pending"}]
    )
    return conv, run, msg


def _operations(conv: Any, run: Any, msg: Any) -> list[tuple[str, Callable[[Scope, Any], Awaitable[object]]]]:
    return [
        ("get_conversation", lambda s, i: s.get_conversation(i[0], messages=True)),
        ("update_conversation", lambda s, i: s.update_conversation(i[0], title="mine now")),
        ("delete_conversation", lambda s, i: s.delete_conversation(i[0])),
        ("start_history", lambda s, i: s.start_history(i[0], model="m")),
        ("list_messages", lambda s, i: s.list_messages(conversation_id=i[0])),
        ("transcript", lambda s, i: s.transcript(i[0])),
        ("get_history", lambda s, i: s.get_history(i[1])),
        ("finish_history", lambda s, i: s.finish_history(i[1])),
        ("update_history", lambda s, i: s.update_history(i[1], model="mine now")),
        ("start_run", lambda s, i: s.start_run(i[0], model="m", messages=[{"role": "user", "content": "x"}])),
        (
            "record_run",
            lambda s, i: s.record_run(i[0], model="m", messages=[{"role": "user", "content": "x"}]),
        ),
        ("finish_run", lambda s, i: s.finish_run(i[1], messages=[{"role": "user", "content": "x"}])),
        ("delete_history", lambda s, i: s.delete_history(i[1])),
        ("append_messages", lambda s, i: s.append_messages(i[1], [{"role": "user", "content": "x"}])),
        ("list_messages_h", lambda s, i: s.list_messages(history_id=i[1])),
        ("get_message", lambda s, i: s.get_message(i[2])),
        ("delete_message", lambda s, i: s.delete_message(i[2])),
        ("complete_message", lambda s, i: s.complete_message(i[2], content="x")),
        ("fail_message", lambda s, i: s.fail_message(i[2], error="x")),
    ]


async def test_another_principals_objects_look_missing(alice: Scope, bob: Scope, memory: ChatMemory) -> None:
    conv, run, msg = await _alice_data(alice)
    other_tenant_admin = memory.scoped(Principal("root", tenant="acme", admin=True))
    same_id_other_tenant = memory.scoped(Principal("alice", tenant="acme"))
    for intruder in (bob, other_tenant_admin, same_id_other_tenant):
        for name, op in _operations(conv, run, msg):
            real = (conv.id, run.id, msg.id)
            fake = (new_id(), new_id(), new_id())
            with pytest.raises(NotFoundError) as seen:
                await op(intruder, real)
            with pytest.raises(NotFoundError) as missing:
                await op(intruder, fake)
            assert type(seen.value) is type(missing.value), name
            # Same message shape: only the id differs.
            assert str(seen.value).replace(str(seen.value.object_id), "ID") == str(missing.value).replace(
                str(missing.value.object_id), "ID"
            ), name
    # Nothing changed for alice.
    detail = await alice.get_conversation(conv.id, messages=True)
    assert detail.title == "secret plans"
    assert detail.histories[0].status == "running"
    assert [m.content for m in detail.histories[0].messages or []] == ["the secret"]
    assert (await alice.get_message(msg.id)).status == "pending"


async def test_error_types_match_the_object(bob: Scope) -> None:
    with pytest.raises(ConversationNotFound):
        await bob.get_conversation(new_id())
    with pytest.raises(HistoryNotFound):
        await bob.get_history(new_id())
    with pytest.raises(MessageNotFound):
        await bob.get_message(new_id())


async def test_listing_shows_only_own(alice: Scope, bob: Scope) -> None:
    await _alice_data(alice)
    mine = await bob.start_conversation("bob's")
    page = await bob.list_conversations()
    assert [c.id for c in page.items] == [mine.id]
    assert (await alice.list_conversations()).items[0].title == "secret plans"


async def test_admin_manages_any_in_its_tenant(memory: ChatMemory) -> None:
    alice = memory.scoped(Principal("alice", tenant="acme"))
    outsider = memory.scoped(Principal("carol", tenant="other"))
    admin = memory.scoped(Principal("boss", tenant="acme", admin=True))
    conv, run, _ = await _alice_data(alice)
    await _alice_data(outsider)
    listed = await admin.list_conversations()
    assert [c.id for c in listed.items] == [conv.id]
    assert listed.items[0].owner_id == "alice"
    await admin.update_conversation(conv.id, title="moderated")
    await admin.append_messages(run.id, [{"role": "assistant", "content": "admin note"}])
    assert (await alice.get_conversation(conv.id)).title == "moderated"
    # The admin changes the histories of alice's conversation too, and each answer is what she then reads.
    updated = await admin.update_history(run.id, model="reviewed")
    finished = await admin.finish_run(run.id, messages=[{"role": "assistant", "content": "closed"}])
    started = await admin.start_run(conv.id, model="m2", messages=[{"role": "user", "content": "again"}])
    stopped = await admin.finish_history(started.history.id, status="cancelled")
    recorded = await admin.record_run(conv.id, model="m3", messages=[])
    assert (updated.model, finished.history.status, stopped.status) == ("reviewed", "completed", "cancelled")
    seen = {h.id: h for h in (await alice.get_conversation(conv.id)).histories}
    for answer in (finished.history, stopped, recorded.history):
        assert seen[answer.id].model_dump(exclude={"messages"}) == answer.model_dump()
    transcript = [m.content for m in await alice.transcript(conv.id)]
    assert transcript == ["the secret", "admin note", "closed", "again"]
    await admin.delete_conversation(conv.id)
    with pytest.raises(ConversationNotFound):
        await alice.get_conversation(conv.id)


async def test_tenantless_admin_does_not_see_tenants(memory: ChatMemory) -> None:
    tenant_user = memory.scoped(Principal("alice", tenant="acme"))
    conv, _, _ = await _alice_data(tenant_user)
    root = memory.scoped(Principal("root", admin=True))
    assert (await root.list_conversations()).items == []
    with pytest.raises(ConversationNotFound):
        await root.get_conversation(conv.id)


async def test_principal_from_context(memory: ChatMemory) -> None:
    with pytest.raises(NoPrincipalError):
        memory.scoped()
    with use_principal(Principal("alice")):
        chat = memory.scoped()
        assert chat.principal == Principal("alice")
        conv = await chat.start_conversation()
    assert conv.owner_id == "alice"
    with pytest.raises(NoPrincipalError):
        memory.scoped()


def test_principal_validation() -> None:
    from chatmemory import InvalidInputError

    for bad in ("", "x" * 256, 3, "a\x00b"):
        with pytest.raises(InvalidInputError):
            Principal(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        Principal("a", tenant="")
    assert Principal("a", tenant="t", admin=True).admin
