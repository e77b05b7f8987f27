"""What ADK's own session services take but the store would refuse as it is: a model name
longer than the store keeps, state values JSON cannot hold. This service takes them too."""

from __future__ import annotations

import math

import pytest
from chatmemory_adk import ChatMemorySessionService, ProvenancePlugin
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import BaseSessionService
from google.adk.sessions.database_session_service import DatabaseSessionService
from google.adk.sessions.in_memory_session_service import InMemorySessionService
from google.genai import types

from chatmemory import ChatMemory, HistoryDetail, Limits, Principal
from tests.plugins.adk import _agent
from tests.plugins.adk._agent import APP, USER, run_turn

# A model served from a long local path (vLLM serves a model under the path it was loaded from).
LONG_MODEL = "/mnt/models/hub/" + "/".join(["org--" + "a" * 90, "snapshots", "b" * 80, "Llama-3.1-8B"])
LABEL = LONG_MODEL[:99] + "…" + LONG_MODEL[-100:]


async def _histories(memory: ChatMemory) -> list[HistoryDetail]:
    chat = memory.scoped(Principal(USER, tenant=APP))
    (summary,) = (await chat.list_conversations()).items
    return (await chat.get_conversation(summary.id, messages=True)).histories


async def test_a_model_version_longer_than_the_store_takes_is_recorded_shortened(memory: ChatMemory) -> None:
    baseline = InMemorySessionService()
    await baseline.create_session(app_name=APP, user_id=USER, session_id="s")
    await run_turn(baseline, LONG_MODEL, "s", "please add 2 and 3")

    service = ChatMemorySessionService(memory)
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    await run_turn(service, LONG_MODEL, "s", "please add 2 and 3")

    (history,) = await _histories(memory)
    assert (history.model, len(LABEL)) == (LABEL, 200)
    assert [(m.role, m.model) for m in history.messages or []] == [
        ("user", None),
        ("assistant", LABEL),
        ("tool", None),
        ("assistant", LABEL),
    ]
    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert stored is not None
    # The events keep the name whole, as ADK made them.
    assert [e.model_version for e in stored.events] == [None, LONG_MODEL, None, LONG_MODEL]


async def test_an_agents_model_longer_than_the_store_takes_is_recorded_shortened(memory: ChatMemory) -> None:
    service = ChatMemorySessionService(memory)
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    await run_turn(
        service, LONG_MODEL, "s", "please add 2 and 3", stamp=False, plugins=[ProvenancePlugin(service)]
    )

    (history,) = await _histories(memory)
    assert (history.model, history.status) == (LABEL, "completed")
    assert {m.model for m in history.messages or [] if m.role == "assistant"} == {LABEL}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_state_a_float_json_cannot_hold_is_stored_as_null(memory: ChatMemory, value: float) -> None:
    delta = {"score": value, "user:best": value, "app:top": [value, 1.5], "plain": 2.5}
    database = DatabaseSessionService("sqlite+aiosqlite:///:memory:")
    ours_service = ChatMemorySessionService(memory)
    services: list[BaseSessionService] = [InMemorySessionService(), database, ours_service]
    states = []
    try:
        for service in services:
            session = await service.create_session(app_name=APP, user_id=USER, session_id="s")
            event = Event(author="calc", invocation_id="i-1", actions=EventActions(state_delta=delta))
            await service.append_event(session, event)
            assert session.state["plain"] == 2.5
            stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
            assert stored is not None
            assert len(stored.events) == 1
            states.append(stored.state)
    finally:
        await database.close()

    in_memory, theirs, ours = states
    assert set(in_memory) == set(theirs) == set(ours) == {"score", "user:best", "app:top", "plain"}
    # JSON has no such float: ``null`` stands for it, as it does in ADK's own check of state values.
    assert ours == {"score": None, "user:best": None, "app:top": [None, 1.5], "plain": 2.5}


async def test_an_event_with_a_logprob_json_cannot_hold(memory: ChatMemory) -> None:
    database = DatabaseSessionService("sqlite+aiosqlite:///:memory:")
    mine = ChatMemorySessionService(memory)
    candidate = types.LogprobsResultCandidate(token="5", token_id=20, log_probability=-math.inf)
    read = []
    try:
        for service in (InMemorySessionService(), database, mine):
            session = await service.create_session(app_name=APP, user_id=USER, session_id="s")
            event = Event(
                author="calc",
                invocation_id="i-1",
                content=types.Content(role="model", parts=[types.Part(text="5")]),
                avg_logprobs=-math.inf,
                logprobs_result=types.LogprobsResult(chosen_candidates=[candidate]),
                model_version="local-model",
            )
            await service.append_event(session, event)
            stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
            assert stored is not None
            read.append([(e.content, e.avg_logprobs) for e in stored.events])
    finally:
        await database.close()
    assert read[0] == read[1]
    # JSON has no such float: null stands for it.
    assert read[2] == [(read[0][0][0], None)]


def explode() -> int:
    """Fail, saying much (an API error quoting a whole response body, say)."""
    raise RuntimeError("boom " + "x" * 200_000)


async def test_a_session_created_with_state_json_cannot_hold(memory: ChatMemory) -> None:
    service = ChatMemorySessionService(memory)
    state = {"score": math.nan, "user:best": math.inf, "app:top": -math.inf}

    session = await service.create_session(app_name=APP, user_id=USER, session_id="s", state=state)

    assert session.state == {"score": None, "user:best": None, "app:top": None}


async def test_an_event_whose_text_neither_backend_can_hold(memory: ChatMemory) -> None:
    # ADK's database service keeps it on SQLite as JSON escapes; no database column of text holds
    # a NUL character or a lone surrogate, so U+FFFD stands in for each, and the event is stored.
    service = ChatMemorySessionService(memory)
    session = await service.create_session(app_name=APP, user_id=USER, session_id="s")
    result = {"output": "PK\x03\x04\x00\x00 caf\udce9.txt"}
    response = types.FunctionResponse(id="c1", name="read_file", response=result)
    event = Event(
        author="reader",
        invocation_id="i-1",
        content=types.Content(role="user", parts=[types.Part(function_response=response)]),
    )
    await service.append_event(session, event)
    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert stored is not None
    (read,) = stored.events
    assert read.content is not None and read.content.parts is not None
    part = read.content.parts[0].function_response
    assert part is not None and part.response == {"output": "PK\x03\x04\ufffd\ufffd caf\ufffd.txt"}


async def test_state_whose_text_neither_backend_can_hold(memory: ChatMemory) -> None:
    # An agent's ``output_key`` copies its reply into the state delta, so a reply echoing a binary
    # file puts a NUL character there too: U+FFFD stands in for it, as in the event's own text,
    # and the event is stored (it was refused whole, and the run failed with its reply lost).
    service = ChatMemorySessionService(memory)
    raw = "PK\x03\x04\x00\x00 caf\udce9.txt"
    clean = "PK\x03\x04\ufffd\ufffd caf\ufffd.txt"
    session = await service.create_session(
        app_name=APP, user_id=USER, session_id="s", state={"seed": raw, "user:k\x00": [raw]}
    )
    delta = {"last_reply": raw, "user:file": {"name\x00": raw}, "app:seen": [raw, 1], "temp:scratch": raw}
    event = Event(
        author="reader",
        invocation_id="i-1",
        content=types.Content(role="model", parts=[types.Part(text=raw)]),
        actions=EventActions(state_delta=delta),
    )
    await service.append_event(session, event)

    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert stored is not None
    (read,) = stored.events
    assert read.content is not None and read.content.parts is not None
    assert read.content.parts[0].text == clean
    assert stored.state == {
        "seed": clean,
        "user:k\ufffd": [clean],
        "last_reply": clean,
        "user:file": {"name\ufffd": clean},
        "app:seen": [clean, 1],
    }


async def test_a_session_id_longer_than_the_stores_title_limit(db_url: str) -> None:
    # The session id is the conversation's title: cut to the store's limit, which may be lower
    # than its default of 200 characters.
    sid = "session-" + "x" * 60
    async with ChatMemory.open(db_url, limits=Limits(title=40)) as memory:
        service = ChatMemorySessionService(memory)
        created = await service.create_session(app_name=APP, user_id=USER, session_id=sid)
        assert created.id == sid
        chat = memory.scoped(Principal(USER, tenant=APP))
        (summary,) = (await chat.list_conversations()).items
        assert summary.title == sid[:40]


@pytest.mark.parametrize(("content", "kept"), [(Limits().content, 10_000), (5_000, 5_000)])
async def test_a_run_failing_with_a_longer_error_than_the_store_takes(
    db_url: str, monkeypatch: pytest.MonkeyPatch, content: int, kept: int
) -> None:
    # Cut to 10,000 characters, or to the store's content limit where that is lower.
    monkeypatch.setattr(_agent, "explode", explode)
    async with ChatMemory.open(db_url, limits=Limits(content=content)) as memory:
        service = ChatMemorySessionService(memory)
        await service.create_session(app_name=APP, user_id=USER, session_id="s")

        with pytest.raises(RuntimeError, match=r"^boom x"):
            await run_turn(service, "m", "s", "explode", plugins=[ProvenancePlugin(service)])

        (history,) = await _histories(memory)
        assert history.status == "failed"
        assert history.error is not None and history.error.startswith("RuntimeError: boom x")
        assert len(history.error) == kept


async def test_sessions_listed_from_a_store_with_a_lower_cap_on_a_page(db_url: str) -> None:
    async with ChatMemory.open(db_url, limits=Limits(list_limit=5)) as memory:
        service = ChatMemorySessionService(memory)
        for i in range(7):
            await service.create_session(app_name=APP, user_id=USER, session_id=f"s{i}")
        listed = await service.list_sessions(app_name=APP, user_id=USER)
        assert sorted(s.id for s in listed.sessions) == [f"s{i}" for i in range(7)]
