"""A whole session read again: the service keeps its events between reads and reads only what
changed, and hands every read copies of them."""

from __future__ import annotations

from typing import Any

import pytest
from chatmemory_adk import ChatMemorySessionService
from chatmemory_adk import service as service_module
from google.adk.events.event import Event
from google.adk.sessions.session import Session

from chatmemory import ChatMemory, Principal
from tests.plugins.adk.test_storage import user_event as event

APP = "app"


async def read(service: ChatMemorySessionService, session_id: str = "s") -> Session:
    session = await service.get_session(app_name=APP, user_id="u", session_id=session_id)
    assert session is not None
    return session


def texts(session: Session) -> list[str | None]:
    return [e.content.parts[0].text for e in session.events]  # type: ignore[union-attr,index]


def as_stored(session: Session) -> dict[str, Any]:
    """What a read says of the session: its state, revision and every event field."""
    return {
        "state": session.state,
        "marker": session._storage_update_marker,
        "updated": session.last_update_time,
        "events": [e.model_dump(mode="json") for e in session.events],
    }


@pytest.fixture
def converted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many stored messages each whole read turned into events."""
    counts: list[int] = []
    convert = service_module._events_of

    def counting(messages: Any) -> list[Event | None]:
        counts.append(len(messages))
        return convert(messages)

    monkeypatch.setattr(service_module, "_events_of", counting)
    return counts


async def test_each_read_gets_copies_the_caller_may_change(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="u", session_id="s")
    for text in ("one", "two"):
        await service.append_event(session, event(text))
    first = await read(service)
    first.events[0].content.parts[0].text = "changed"  # type: ignore[union-attr,index]
    first.events[1].actions.state_delta["x"] = 1
    first.events.pop()

    again = await read(service)
    assert texts(again) == ["one", "two"]
    assert again.events[1].actions.state_delta == {}
    assert again.events[0] is not first.events[0]


async def test_a_read_converts_only_what_was_appended_since(memory: ChatMemory, converted: list[int]) -> None:
    service = ChatMemorySessionService(memory)  # made once the conversions are counted
    session = await service.create_session(app_name=APP, user_id="u", session_id="s")
    for i in range(20):
        await service.append_event(session, event(f"m{i}"))
    assert len((await read(service)).events) == 20
    await service.append_event(await read(service), event("newer"))
    latest = await read(service)
    assert texts(latest)[-2:] == ["m19", "newer"]
    # The empty session ``create_session`` reads, the 20 appended since, nothing for the read
    # that found nothing new, then the one appended since.
    assert converted == [0, 20, 1]


async def test_what_another_store_changes_is_read_as_a_fresh_service_reads_it(
    db_url: str, service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    """Another process's service appends events and state, then a message is deleted through
    the core API: the service that kept the session reads exactly what a new one reads."""
    session = await service.create_session(app_name=APP, user_id="u", session_id="s", state={"k": 0})
    for i in range(5):
        await service.append_event(session, event(f"m{i}"))
    await read(service)
    async with ChatMemorySessionService.from_url(db_url) as elsewhere:
        theirs = await read(elsewhere)
        for i in range(3):
            await elsewhere.append_event(theirs, event(f"theirs {i}", k=i + 1))
        kept = await read(service)
        assert texts(kept) == [*(f"m{i}" for i in range(5)), "theirs 0", "theirs 1", "theirs 2"]
        assert kept.state == {"k": 3}
        assert as_stored(kept) == as_stored(await read(ChatMemorySessionService(memory)))

        chat = memory.scoped(Principal("u", tenant=APP))
        (conversation,) = (await chat.list_conversations()).items
        transcript = await chat.transcript(conversation.id)
        await chat.delete_message(transcript[2].id)
        after = await read(service)
        assert texts(after) == ["m0", "m1", "m3", "m4", "theirs 0", "theirs 1", "theirs 2"]
        assert as_stored(after) == as_stored(await read(ChatMemorySessionService(memory)))
        assert as_stored(after) == as_stored(await read(elsewhere))


async def test_a_session_deleted_and_created_again_is_read_anew(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="u", session_id="s")
    await service.append_event(session, event("before"))
    assert texts(await read(service)) == ["before"]
    await service.delete_session(app_name=APP, user_id="u", session_id="s")
    assert await service.get_session(app_name=APP, user_id="u", session_id="s") is None
    session = await service.create_session(app_name=APP, user_id="u", session_id="s")
    await service.append_event(session, event("after"))
    assert texts(await read(service)) == ["after"]
