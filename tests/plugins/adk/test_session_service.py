"""ADK's own session-service tests, rewritten against ``ChatMemorySessionService``.

Ported from google/adk-python ``tests/unittests/sessions/test_session_service.py`` (the
version matching google-adk 2.13): the tests that describe a session service's behaviour,
run here over SQLite and PostgreSQL instead of ADK's in-memory and database services.
Tests of ADK's own engine plumbing (pool options, rollback spies, table creation) have no
counterpart; their intent (nothing half-written on failure) is covered by
``test_append_event_with_missing_user_state_writes_nothing``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from chatmemory_adk import ChatMemorySessionService
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import GetSessionConfig
from google.genai import types

APP = "my_app"


def now() -> float:
    return datetime.now(UTC).timestamp()


async def test_get_empty_session(service: ChatMemorySessionService) -> None:
    assert await service.get_session(app_name=APP, user_id="test_user", session_id="123") is None


async def test_create_get_session(service: ChatMemorySessionService) -> None:
    state = {"key": "value"}
    session = await service.create_session(app_name=APP, user_id="test_user", state=state)
    assert session.app_name == APP
    assert session.user_id == "test_user"
    assert session.id
    assert session.state == state
    assert session.last_update_time <= now()

    got = await service.get_session(app_name=APP, user_id="test_user", session_id=session.id)
    assert got == session
    assert got.last_update_time <= now()

    await service.delete_session(app_name=APP, user_id="test_user", session_id=session.id)
    assert await service.get_session(app_name=APP, user_id="test_user", session_id=session.id) is None


async def test_create_and_list_sessions(service: ChatMemorySessionService) -> None:
    ids = [f"session{i}" for i in range(5)]
    for sid in ids:
        await service.create_session(
            app_name=APP, user_id="test_user", session_id=sid, state={"key": "value" + sid}
        )
    sessions = (await service.list_sessions(app_name=APP, user_id="test_user")).sessions
    assert len(sessions) == len(ids)
    assert {s.id for s in sessions} == set(ids)
    for session in sessions:
        assert session.state == {"key": "value" + session.id}
        assert session.events == []


async def test_list_sessions_all_users(service: ChatMemorySessionService) -> None:
    await service.create_session(
        app_name=APP, user_id="user1", session_id="session1a", state={"key": "value1a"}
    )
    await service.create_session(
        app_name=APP, user_id="user1", session_id="session1b", state={"key": "value1b"}
    )
    await service.create_session(
        app_name=APP, user_id="user2", session_id="session2a", state={"key": "value2a"}
    )

    sessions_1 = {s.id: s for s in (await service.list_sessions(app_name=APP, user_id="user1")).sessions}
    assert set(sessions_1) == {"session1a", "session1b"}
    assert sessions_1["session1a"].state == {"key": "value1a"}
    assert sessions_1["session1b"].state == {"key": "value1b"}

    sessions_2 = (await service.list_sessions(app_name=APP, user_id="user2")).sessions
    assert [(s.id, s.state) for s in sessions_2] == [("session2a", {"key": "value2a"})]

    everyone = {s.id: s for s in (await service.list_sessions(app_name=APP, user_id=None)).sessions}
    assert {k: s.state for k, s in everyone.items()} == {
        "session1a": {"key": "value1a"},
        "session1b": {"key": "value1b"},
        "session2a": {"key": "value2a"},
    }
    assert everyone["session2a"].user_id == "user2"
    assert (await service.list_sessions(app_name="other_app")).sessions == []


async def test_list_sessions_oldest_update_first_with_shared_state(service: ChatMemorySessionService) -> None:
    first = await service.create_session(
        app_name=APP, user_id="u1", session_id="a", state={"user:name": "Ann"}
    )
    await service.create_session(app_name=APP, user_id="u2", session_id="b", state={"app:mode": "x"})
    await service.append_event(first, Event(invocation_id="i", author="user", timestamp=now() + 100))
    listed = (await service.list_sessions(app_name=APP)).sessions
    assert [s.id for s in listed] == ["b", "a"]
    assert listed[1].state == {"user:name": "Ann", "app:mode": "x"}
    assert listed[0].state == {"app:mode": "x"}


async def test_app_state_is_shared_by_all_users_of_app(service: ChatMemorySessionService) -> None:
    session1 = await service.create_session(
        app_name=APP, user_id="u1", session_id="s1", state={"app:k1": "v1"}
    )
    event = Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"app:k2": "v2"}))
    await service.append_event(session=session1, event=event)

    session2 = await service.create_session(app_name=APP, user_id="u2", session_id="s2")
    assert session2.state == {"app:k1": "v1", "app:k2": "v2"}

    got = await service.get_session(app_name=APP, user_id="u1", session_id="s1")
    assert got.state.get("app:k1") == "v1"
    assert got.state.get("app:k2") == "v2"


async def test_user_state_is_shared_only_by_user_sessions(service: ChatMemorySessionService) -> None:
    session1 = await service.create_session(
        app_name=APP, user_id="u1", session_id="s1", state={"user:k1": "v1"}
    )
    event = Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"user:k2": "v2"}))
    await service.append_event(session=session1, event=event)

    session1b = await service.create_session(app_name=APP, user_id="u1", session_id="s1b")
    assert session1b.state == {"user:k1": "v1", "user:k2": "v2"}

    session2 = await service.create_session(app_name=APP, user_id="u2", session_id="s2")
    assert session2.state == {}


async def test_session_state_is_not_shared(service: ChatMemorySessionService) -> None:
    session1 = await service.create_session(app_name=APP, user_id="u1", session_id="s1", state={"sk1": "v1"})
    event = Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"sk2": "v2"}))
    await service.append_event(session=session1, event=event)

    got = await service.get_session(app_name=APP, user_id="u1", session_id="s1")
    assert got.state.get("sk1") == "v1"
    assert got.state.get("sk2") == "v2"

    session1b = await service.create_session(app_name=APP, user_id="u1", session_id="s1b")
    assert session1b.state == {}


async def test_temp_state_is_not_persisted_in_state_or_events(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="u1", session_id="s1")
    event = Event(
        invocation_id="inv1", author="user", actions=EventActions(state_delta={"temp:k1": "v1", "sk": "v2"})
    )
    await service.append_event(session=session, event=event)

    assert session.state.get("temp:k1") == "v1"
    assert session.state.get("sk") == "v2"
    assert "temp:k1" not in event.actions.state_delta
    assert event.actions.state_delta.get("sk") == "v2"

    stored = await service.get_session(app_name=APP, user_id="u1", session_id="s1")
    assert stored.state == {"sk": "v2"}
    assert stored.events[0].actions.state_delta == {"sk": "v2"}


async def test_temp_state_visible_across_sequential_events(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="u1", session_id="s_seq")
    event1 = Event(
        invocation_id="inv1",
        author="agent1",
        actions=EventActions(state_delta={"temp:output": "result_from_a1"}),
    )
    await service.append_event(session=session, event=event1)
    assert session.state.get("temp:output") == "result_from_a1"
    assert "temp:output" not in event1.actions.state_delta


async def test_get_session_respects_user_id(service: ChatMemorySessionService) -> None:
    session1 = await service.create_session(app_name=APP, user_id="u1", session_id="s1")
    await service.append_event(session1, Event(invocation_id="inv1", author="user"))
    await service.create_session(app_name=APP, user_id="u2", session_id="s1")

    got = await service.get_session(app_name=APP, user_id="u2", session_id="s1")
    assert got.user_id == "u2"
    assert len(got.events) == 0
    # Another app is another tenant: the same ids find nothing there.
    assert await service.get_session(app_name="other_app", user_id="u1", session_id="s1") is None


async def test_create_session_with_existing_id_raises_error(service: ChatMemorySessionService) -> None:
    await service.create_session(app_name=APP, user_id="test_user", session_id="existing_session")
    with pytest.raises(AlreadyExistsError):
        await service.create_session(app_name=APP, user_id="test_user", session_id="existing_session")


async def test_append_event_bytes(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="user")
    content = types.Content(
        role="user", parts=[types.Part.from_bytes(data=b"test_image_data", mime_type="image/png")]
    )
    grounding = types.GroundingMetadata(search_entry_point=types.SearchEntryPoint(sdk_blob=b"test_sdk_blob"))
    event = Event(invocation_id="invocation", author="user", content=content, grounding_metadata=grounding)
    await service.append_event(session=session, event=event)
    assert session.events[0].content == content

    got = await service.get_session(app_name=APP, user_id="user", session_id=session.id)
    assert len(got.events) == 1
    assert got.events[0].content == content
    assert got.events[0].grounding_metadata == grounding


async def test_append_event_complete(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="user")
    event = Event(
        invocation_id="invocation",
        author="user",
        content=types.Content(role="user", parts=[types.Part(text="test_text")]),
        turn_complete=True,
        partial=False,
        actions=EventActions(artifact_delta={"file": 0}, transfer_to_agent="agent", escalate=True),
        long_running_tool_ids={"tool1"},
        error_code="error_code",
        error_message="error_message",
        interrupted=True,
        grounding_metadata=types.GroundingMetadata(web_search_queries=["query1"]),
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=1, candidates_token_count=1, total_token_count=2
        ),
        citation_metadata=types.CitationMetadata(),
        custom_metadata={"custom_key": "custom_value"},
        timestamp=1700000000.123,
        input_transcription=types.Transcription(text="input transcription", finished=True),
        output_transcription=types.Transcription(text="output transcription", finished=True),
    )
    await service.append_event(session=session, event=event)
    assert await service.get_session(app_name=APP, user_id="user", session_id=session.id) == session


async def test_session_last_update_time_updates_on_event(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="user")
    original = session.last_update_time
    event_timestamp = original + 10
    await service.append_event(
        session=session, event=Event(invocation_id="i", author="user", timestamp=event_timestamp)
    )
    assert session.last_update_time == pytest.approx(event_timestamp, abs=1e-6)

    refreshed = await service.get_session(app_name=APP, user_id="user", session_id=session.id)
    assert refreshed.last_update_time == pytest.approx(event_timestamp, abs=1e-6)
    assert refreshed.last_update_time > original


async def test_append_event_to_stale_session(service: ChatMemorySessionService) -> None:
    current = now()
    original = await service.create_session(app_name=APP, user_id="user")
    event1 = Event(
        invocation_id="inv1",
        author="user",
        timestamp=current + 1,
        actions=EventActions(state_delta={"sk1": "v1"}),
    )
    await service.append_event(original, event1)

    updated = await service.get_session(app_name=APP, user_id="user", session_id=original.id)
    event2 = Event(
        invocation_id="inv2",
        author="user",
        timestamp=current + 2,
        actions=EventActions(state_delta={"sk2": "v2"}),
    )
    await service.append_event(updated, event2)

    assert original.last_update_time < updated.last_update_time
    assert len(original.events) == 1
    assert "sk2" not in original.state

    event3 = Event(
        invocation_id="inv3",
        author="user",
        timestamp=current + 3,
        actions=EventActions(state_delta={"sk3": "v3"}),
    )
    with pytest.raises(ValueError, match="modified in storage"):
        await service.append_event(original, event3)

    final = await service.get_session(app_name=APP, user_id="user", session_id=original.id)
    assert len(final.events) == 2
    assert final.state.get("sk1") == "v1"
    assert final.state.get("sk2") == "v2"
    assert final.state.get("sk3") is None
    assert [e.invocation_id for e in final.events] == ["inv1", "inv2"]


async def test_append_event_concurrent_stale_sessions_reject_stale_writer(
    service: ChatMemorySessionService,
) -> None:
    session = await service.create_session(app_name=APP, user_id="user")
    rounds = 8
    for i in range(rounds):
        latest = await service.get_session(app_name=APP, user_id="user", session_id=session.id)
        stale_1 = latest.model_copy(deep=True)
        stale_2 = latest.model_copy(deep=True)
        base = latest.last_update_time + 10.0
        event_1 = Event(
            invocation_id=f"inv{i}-1",
            author="user",
            timestamp=base + 1.0,
            actions=EventActions(state_delta={f"sk{i}-1": f"v{i}-1"}),
        )
        event_2 = Event(
            invocation_id=f"inv{i}-2",
            author="user",
            timestamp=base + 2.0,
            actions=EventActions(state_delta={f"sk{i}-2": f"v{i}-2"}),
        )
        results = await asyncio.gather(
            service.append_event(stale_1, event_1),
            service.append_event(stale_2, event_2),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1
        assert isinstance(errors[0], ValueError)
        assert "modified in storage" in str(errors[0])

    final = await service.get_session(app_name=APP, user_id="user", session_id=session.id)
    for i in range(rounds):
        values = {final.state.get(f"sk{i}-1"), final.state.get(f"sk{i}-2")}
        assert values & {f"v{i}-1", f"v{i}-2"}
        assert None in values
    assert len(final.events) == rounds


async def test_append_event_allows_timestamp_drift_for_current_session(
    service: ChatMemorySessionService,
) -> None:
    session = await service.create_session(app_name=APP, user_id="user", session_id="s1")
    event1 = Event(invocation_id="inv1", author="user", timestamp=session.last_update_time + 10)
    await service.append_event(session, event1)
    session.last_update_time -= 0.0001
    await service.append_event(
        session, Event(invocation_id="inv2", author="user", timestamp=event1.timestamp + 10)
    )
    refreshed = await service.get_session(app_name=APP, user_id="user", session_id="s1")
    assert [e.invocation_id for e in refreshed.events] == ["inv1", "inv2"]


async def test_append_event_allows_markerless_current_session(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="user", session_id="s1")
    event1 = Event(invocation_id="inv1", author="user", timestamp=session.last_update_time + 10)
    await service.append_event(session, event1)
    session._storage_update_marker = None
    session.last_update_time -= 0.0001
    await service.append_event(
        session, Event(invocation_id="inv2", author="user", timestamp=event1.timestamp + 10)
    )
    refreshed = await service.get_session(app_name=APP, user_id="user", session_id="s1")
    assert [e.invocation_id for e in refreshed.events] == ["inv1", "inv2"]


async def test_append_event_refuses_markerless_stale_session(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="user", session_id="s1")
    copy = session.model_copy(deep=True)
    copy._storage_update_marker = None
    await service.append_event(
        session, Event(invocation_id="inv1", author="user", timestamp=session.last_update_time + 10)
    )
    with pytest.raises(ValueError, match="modified in storage"):
        await service.append_event(copy, Event(invocation_id="inv2", author="user"))
    refreshed = await service.get_session(app_name=APP, user_id="user", session_id="s1")
    assert [e.invocation_id for e in refreshed.events] == ["inv1"]


async def test_get_session_with_config(service: ChatMemorySessionService) -> None:
    count = 5
    session = await service.create_session(app_name=APP, user_id="user")
    for i in range(1, count + 1):
        await service.append_event(session, Event(author="user", timestamp=i))

    async def events(**config: float) -> list[Event]:
        got = await service.get_session(
            app_name=APP,
            user_id="user",
            session_id=session.id,
            config=GetSessionConfig(**config) if config else None,
        )
        return got.events

    assert len(await events()) == count
    assert await events(num_recent_events=0) == []
    recent = await events(num_recent_events=3)
    assert [e.timestamp for e in recent] == [3, 4, 5]
    after = await events(after_timestamp=4.0)
    assert [e.timestamp for e in after] == [4, 5]
    assert await events(after_timestamp=count * 10) == []
    both = await events(after_timestamp=4.0, num_recent_events=3)
    assert [e.timestamp for e in both] == [4, 5]
    assert [e.timestamp for e in await events(after_timestamp=4.5, num_recent_events=1)] == [5]


async def test_partial_events_are_not_persisted(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="user")
    await service.append_event(session, Event(author="user", partial=True))
    assert len(session.events) == 0
    got = await service.get_session(app_name=APP, user_id="user", session_id=session.id)
    assert len(got.events) == 0


async def test_create_session_sequential_same_app_name(service: ChatMemorySessionService) -> None:
    s1 = await service.create_session(app_name="shared", user_id="u1", session_id="s1")
    s2 = await service.create_session(app_name="shared", user_id="u2", session_id="s2")
    assert (s1.app_name, s2.app_name) == ("shared", "shared")
    assert await service.get_session(app_name="shared", user_id="u1", session_id="s1") is not None
    assert await service.get_session(app_name="shared", user_id="u2", session_id="s2") is not None


async def test_get_user_state_returns_empty_dict_when_no_state_exists(
    service: ChatMemorySessionService,
) -> None:
    assert await service.get_user_state(app_name=APP, user_id="u1") == {}


async def test_get_user_state_returns_state_written_via_append_event(
    service: ChatMemorySessionService,
) -> None:
    session = await service.create_session(app_name=APP, user_id="u1")
    delta = {"user:profile": {"name": "Alice"}, "session_key": 1}
    await service.append_event(session, Event(author="system", actions=EventActions(state_delta=delta)))
    assert await service.get_user_state(app_name=APP, user_id="u1") == {"profile": {"name": "Alice"}}


async def test_get_user_state_is_not_visible_across_users(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="u1")
    delta = {"user:secret": "only-for-u1"}
    await service.append_event(session, Event(author="system", actions=EventActions(state_delta=delta)))
    assert await service.get_user_state(app_name=APP, user_id="u2") == {}


async def test_get_user_state_is_not_visible_across_apps(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="u1")
    delta = {"user:data": "only-app-a"}
    await service.append_event(session, Event(author="system", actions=EventActions(state_delta=delta)))
    assert await service.get_user_state(app_name="other_app", user_id="u1") == {}


async def test_get_user_state_reflects_latest_write(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="u1")
    for value in (1, 2):
        delta = {"user:counter": value}
        await service.append_event(session, Event(author="system", actions=EventActions(state_delta=delta)))
    assert (await service.get_user_state(app_name=APP, user_id="u1"))["counter"] == 2
