"""How ADK sessions are kept in chatmemory: isolation, events as messages, atomic state,
re-created session ids and re-delivered events."""

from __future__ import annotations

import asyncio
import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from chatmemory_adk import NATIVE_FORMAT, ChatMemorySessionService
from google.adk.errors import StaleSessionError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.sessions.session import Session
from google.genai import types

from chatmemory import (
    ChatMemory,
    FilePart,
    ImagePart,
    InvalidInputError,
    Principal,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from tests.transactions import committed_before_messages

APP = "app"


def user_event(text: str, **delta: object) -> Event:
    return Event(
        invocation_id="inv",
        author="user",
        content=types.Content(role="user", parts=[types.Part(text=text)]),
        actions=EventActions(state_delta=dict(delta)),
    )


async def test_other_users_and_apps_see_nothing(service: ChatMemorySessionService) -> None:
    mine = await service.create_session(app_name=APP, user_id="u1", session_id="s", state={"secret": 1})
    await service.append_event(mine, user_event("private"))

    assert await service.get_session(app_name=APP, user_id="u2", session_id="s") is None
    assert await service.get_session(app_name="other", user_id="u1", session_id="s") is None
    assert (await service.list_sessions(app_name=APP, user_id="u2")).sessions == []
    await service.delete_session(app_name=APP, user_id="u2", session_id="s")  # someone else's: no effect

    forged = Session(id="s", app_name=APP, user_id="u2")
    with pytest.raises(SessionNotFoundError):
        await service.append_event(forged, user_event("intrusion"))
    kept = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert kept is not None
    assert [e.content.parts[0].text for e in kept.events if e.content and e.content.parts] == ["private"]
    assert kept.state == {"secret": 1}


async def test_each_event_is_a_message_with_neutral_parts(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    session = await service.create_session(app_name=APP, user_id="u1", session_id="s")
    png = b"\x89PNG tiny"
    events = [
        Event(
            invocation_id="inv",
            author="user",
            content=types.Content(
                role="user",
                parts=[
                    types.Part(text="what is in here?"),
                    types.Part.from_bytes(data=png, mime_type="image/png"),
                    types.Part(
                        file_data=types.FileData(file_uri="gs://b/doc.pdf", mime_type="application/pdf")
                    ),
                ],
            ),
        ),
        Event(
            invocation_id="inv",
            author="agent",
            model_version="gemini-x",
            content=types.Content(
                role="model",
                parts=[
                    types.Part(text="thinking", thought=True),
                    types.Part(function_call=types.FunctionCall(id="c1", name="look", args={"q": "x"})),
                ],
            ),
        ),
        Event(
            invocation_id="inv",
            author="agent",
            content=types.Content(
                role="user",
                parts=[
                    types.Part(
                        function_response=types.FunctionResponse(id="c1", name="look", response={"r": 1})
                    )
                ],
            ),
        ),
    ]
    for event in events:
        await service.append_event(session, event)

    chat = memory.scoped(Principal("u1", tenant=APP))
    (summary,) = (await chat.list_conversations()).items
    messages = await chat.transcript(summary.id)
    assert [(m.role, m.model) for m in messages] == [
        ("user", None),
        ("assistant", "gemini-x"),
        ("tool", None),
    ]
    assert messages[0].parts == [
        TextPart(text="what is in here?"),
        ImagePart(data=base64.b64encode(png).decode(), media_type="image/png"),
        FilePart(url="gs://b/doc.pdf", media_type="application/pdf"),
    ]
    assert messages[1].parts == [
        ReasoningPart(text="thinking"),
        ToolCallPart(id="c1", name="look", arguments={"q": "x"}),
    ]
    assert messages[2].parts == [ToolResultPart(call_id="c1", content='{"r": 1}')]
    assert all(m.native is not None and m.native.format == NATIVE_FORMAT for m in messages)
    (history,) = (await chat.get_conversation(summary.id)).histories
    assert history.model == "gemini-x"
    assert history.metadata is not None
    assert history.metadata["invocation_id"] == "inv"

    stored = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert stored is not None
    assert stored.events == session.events


async def test_a_failed_append_writes_neither_event_nor_state(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    session = await service.create_session(app_name=APP, user_id="u1", session_id="s", state={"k": "before"})
    chat = memory.scoped(Principal("u1", tenant=APP))
    (user_doc,) = (await chat.list_conversations(archived=True)).items
    (conversation,) = (await chat.list_conversations()).items
    (app_doc,) = (
        await memory.scoped(Principal("google-adk:app", tenant=APP)).list_conversations(archived=True)
    ).items
    # State is written in id order, so the session's and the app's are written before the
    # missing user document is found: the transaction must undo them.
    assert conversation.id < user_doc.id
    assert app_doc.id < user_doc.id
    await chat.delete_conversation(user_doc.id)

    with pytest.raises(ValueError, match="User state missing"):
        await service.append_event(session, user_event("lost", k="after", **{"user:u": 1, "app:a": 2}))

    stored = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert stored is not None
    assert stored.events == []
    assert stored.state == {"k": "before"}
    assert stored.last_update_time == session.last_update_time


async def test_an_event_over_the_store_limits_is_stored_and_read_back_whole(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    # ADK's own DatabaseSessionService stores any event; so does this one: the event is kept
    # whole natively, and only the neutral form other readers use is cut to the limits.
    session = await service.create_session(app_name=APP, user_id="u1", session_id="s")
    essay = "word " * 24_000
    photo = types.Part(
        inline_data=types.Blob(mime_type="image/jpeg", data=b"\xff\xd8\xff\xe0" + bytes(1_500_000))
    )
    event = Event(
        invocation_id="inv",
        author="writer",
        content=types.Content(
            role="model",
            parts=[types.Part(text=essay), photo],
        ),
    )
    await service.append_event(session, event)
    stored = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert stored is not None
    (read,) = stored.events
    assert read.content == event.content

    chat = memory.scoped(Principal("u1", tenant=APP))
    (message,) = await chat.transcript((await chat.list_conversations()).items[0].id)
    assert isinstance(message.parts, list)
    text, image = message.parts
    assert isinstance(text, TextPart) and essay.startswith(text.text.split("\n[")[0])
    assert isinstance(image, TextPart) and "(image/jpeg, 1,500,004 bytes)" in image.text
    assert len(message.content) <= 100_000


async def test_a_deleted_session_id_can_be_created_again(service: ChatMemorySessionService) -> None:
    for round_ in range(3):
        session = await service.create_session(
            app_name=APP, user_id="u1", session_id="s", state={"round": round_}
        )
        assert session.events == []
        assert session.state == {"round": round_}
        await service.append_event(session, user_event(f"round {round_}"))
        got = await service.get_session(app_name=APP, user_id="u1", session_id="s")
        assert got is not None
        assert len(got.events) == 1
        assert [s.state for s in (await service.list_sessions(app_name=APP, user_id="u1")).sessions] == [
            {"round": round_}
        ]
        await service.delete_session(app_name=APP, user_id="u1", session_id="s")
        assert await service.get_session(app_name=APP, user_id="u1", session_id="s") is None


async def test_an_event_delivered_twice_is_stored_once(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="u1", session_id="s")
    event = user_event("once", n=1)
    await service.append_event(session, event)
    await service.append_event(session, event)
    assert len(session.events) == 1
    stored = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert stored is not None
    assert len(stored.events) == 1


async def test_an_event_delivered_again_after_later_ones_changes_nothing(
    service: ChatMemorySessionService,
) -> None:
    """A re-delivered event is stored once and applied once: its state delta and time must not
    be written again over those of the events after it (session, ``user:`` and ``app:`` state,
    and the session's place in the listing), as ``InMemorySessionService`` refuses it first."""
    session = await service.create_session(app_name=APP, user_id="u1", session_id="s")
    delta = {"k": 1, "user:k": 1, "app:k": 1}
    first = Event(
        invocation_id="i", author="agent", timestamp=1_000_001.0, actions=EventActions(state_delta=delta)
    )
    later = Event(
        invocation_id="i",
        author="agent",
        timestamp=1_000_002.0,
        actions=EventActions(state_delta={k: 2 for k in delta}),
    )
    await service.append_event(session, first)
    await service.append_event(session, later)

    await service.append_event(session, first.model_copy(deep=True))
    reread = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert reread is not None
    await service.append_event(reread, first.model_copy(deep=True))

    stored = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert stored is not None
    assert stored.state == session.state == {"k": 2, "user:k": 2, "app:k": 2}
    assert stored.last_update_time == session.last_update_time == 1_000_002.0
    assert [e.id for e in stored.events] == [first.id, later.id]
    (listed,) = (await service.list_sessions(app_name=APP, user_id="u1")).sessions
    assert listed.last_update_time == 1_000_002.0


@pytest.mark.parametrize("after", ["the invocation was finished", "a new service object"])
async def test_an_event_delivered_again_in_a_later_history_changes_nothing(
    memory: ChatMemory, after: str
) -> None:
    """Delivered again once its invocation's history was closed (``ProvenancePlugin`` closes it
    when the run ends), or through another service object (a restarted worker), the event is
    in the session read meanwhile: stored once and applied once, as ``InMemorySessionService``
    does. It was stored again in a new history, its old state written over the later one."""
    service = ChatMemorySessionService(memory)
    session = await service.create_session(app_name=APP, user_id="u1", session_id="s")
    first = Event(invocation_id="i", author="agent", actions=EventActions(state_delta={"n": 1, "user:n": 1}))
    later = Event(invocation_id="i", author="agent", actions=EventActions(state_delta={"n": 2, "user:n": 2}))
    await service.append_event(session, first)
    await service.append_event(session, later)
    if after == "a new service object":
        service = ChatMemorySessionService(memory)
    else:
        await service.finish_invocation("i")

    reread = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert reread is not None
    assert await service.append_event(reread, first.model_copy(deep=True)) == first
    assert reread.state == {"n": 2, "user:n": 2}

    stored = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert stored is not None
    assert ([e.id for e in stored.events], stored.state) == ([first.id, later.id], {"n": 2, "user:n": 2})
    chat = memory.scoped(Principal("u1", tenant=APP))
    (summary,) = (await chat.list_conversations()).items
    assert [h.status for h in (await chat.get_conversation(summary.id)).histories] == [
        "completed" if after == "the invocation was finished" else "running"
    ]


@pytest.mark.parametrize(
    ("app_name", "user_id"), [("", "u1"), (APP, ""), (APP, "u" * 256), ("a" * 256, "u1"), (APP, "u\x001")]
)
async def test_an_app_or_user_no_principal_can_name_is_refused_before_anything_is_written(
    service: ChatMemorySessionService, memory: ChatMemory, app_name: str, user_id: str
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        await service.create_session(app_name=app_name, user_id=user_id, session_id="s", state={"app:k": 1})
    # Named by the ADK argument, not by the principal the service makes of it.
    assert refused.value.field == ("user_id" if app_name == APP else "app_name")
    # (an admin of the app sees every conversation of the app, its state among them)
    admin = memory.scoped(Principal("admin", tenant=APP, admin=True))
    assert (await admin.list_conversations(archived=None)).items == []


async def test_distinct_events_sharing_an_id_are_both_kept(service: ChatMemorySessionService) -> None:
    session = await service.create_session(app_name=APP, user_id="u1", session_id="s")
    first, second = user_event("one"), user_event("two")
    second.id = first.id
    await service.append_event(session, first)
    await service.append_event(session, second)
    stored = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert stored is not None
    assert len(stored.events) == 2


async def test_from_url_opens_and_closes_its_own_store(db_url: str) -> None:
    async with ChatMemorySessionService.from_url(db_url) as service:
        session = await service.create_session(app_name=APP, user_id="u1", session_id="s")
        await service.append_event(session, user_event("hello", k=1))
    async with ChatMemorySessionService.from_url(db_url) as service:
        stored = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert stored is not None
    assert stored.state == {"k": 1}
    assert len(stored.events) == 1


async def test_from_url_opens_once_for_runners_on_threads_with_loops_of_their_own(db_url: str) -> None:
    """A service from ``from_url`` shared by runners on several threads, each running its own
    event loop (``asyncio.run``), whose first calls all arrive while the store is opening."""
    threads = 4
    service = ChatMemorySessionService.from_url(db_url)
    barrier = threading.Barrier(threads)

    def runner(n: int) -> str:
        async def first_call() -> str:
            session = await service.create_session(app_name=APP, user_id="u1", session_id=f"s{n}")
            return session.id

        barrier.wait(timeout=30)
        return asyncio.run(asyncio.wait_for(first_call(), timeout=30))

    try:
        with ThreadPoolExecutor(threads) as pool:
            ids = list(pool.map(runner, range(threads)))
        assert sorted(ids) == [f"s{n}" for n in range(threads)]
        listed = await service.list_sessions(app_name=APP, user_id="u1")
        assert sorted(s.id for s in listed.sessions) == sorted(ids)
    finally:
        await service.close()


async def test_two_stores_on_one_database_let_exactly_one_stale_writer_win(
    db_url: str, service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    session = await service.create_session(app_name=APP, user_id="u1", session_id="s")
    async with ChatMemorySessionService.from_url(db_url) as elsewhere:
        theirs = await elsewhere.get_session(app_name=APP, user_id="u1", session_id="s")
        assert theirs is not None
        results = await asyncio.gather(
            service.append_event(session, user_event("mine", who="me")),
            elsewhere.append_event(theirs, user_event("theirs", who="them")),
            return_exceptions=True,
        )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], StaleSessionError)
    stored = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert stored is not None
    assert len(stored.events) == 1
    winner = "me" if stored.events[0].content.parts[0].text == "mine" else "them"  # type: ignore[union-attr,index]
    assert stored.state == {"who": winner}
    # The refused writer's run left no empty history behind.
    chat = memory.scoped(Principal("u1", tenant=APP))
    (summary,) = (await chat.list_conversations()).items
    assert len((await chat.get_conversation(summary.id)).histories) == 1


async def test_a_session_read_while_another_store_appends_is_one_consistent_state(
    db_url: str, service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    """An event appended by another store while ``get_session`` reads (on SQLite between the
    session's state and revision and its events, in one snapshot) is either wholly in the
    session read or wholly absent: its events, its own state and its revision agree, so writing
    from it is refused exactly when it is out of date, as ADK's own stores refuse it."""
    created = await service.create_session(app_name=APP, user_id="u1", session_id="s")
    await service.append_event(created, user_event("first", n=1))
    async with ChatMemorySessionService.from_url(db_url) as elsewhere:

        async def append_elsewhere() -> None:
            theirs = await elsewhere.get_session(app_name=APP, user_id="u1", session_id="s")
            assert theirs is not None
            await elsewhere.append_event(theirs, user_event("second", n=2))

        with committed_before_messages(memory, append_elsewhere) as done:
            session = await service.get_session(app_name=APP, user_id="u1", session_id="s")
        assert done  # the other store did commit while it was read
    assert session is not None
    texts = [e.content.parts[0].text for e in session.events if e.content and e.content.parts]
    assert (texts, session.state) in ((["first"], {"n": 1}), (["first", "second"], {"n": 2}))
    if texts == ["first"]:  # as it was before the other append: out of date
        with pytest.raises(StaleSessionError):
            await service.append_event(session, user_event("third", n=3))
        fresh = await service.get_session(app_name=APP, user_id="u1", session_id="s")
        assert fresh is not None
        session = fresh
    await service.append_event(session, user_event("third", n=3))
    stored = await service.get_session(app_name=APP, user_id="u1", session_id="s")
    assert stored is not None
    assert [e.content.parts[0].text for e in stored.events if e.content and e.content.parts] == [
        "first",
        "second",
        "third",
    ]
    assert stored.state == {"n": 3}


async def test_a_session_deleted_while_it_is_read_is_read_whole_or_not_at_all(
    db_url: str, service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    created = await service.create_session(app_name=APP, user_id="u1", session_id="s")
    await service.append_event(created, user_event("first", n=1))
    async with ChatMemorySessionService.from_url(db_url) as elsewhere:

        async def delete_elsewhere() -> None:
            await elsewhere.delete_session(app_name=APP, user_id="u1", session_id="s")

        with committed_before_messages(memory, delete_elsewhere) as done:
            session = await service.get_session(app_name=APP, user_id="u1", session_id="s")
        assert done
    # Before the delete (its state with its event) or after it (no session): never its state
    # with none of the events that made it.
    if session is not None:
        assert (len(session.events), session.state) == (1, {"n": 1})


async def test_a_session_deleted_while_it_is_read_since_a_time_is_read_whole_or_not_at_all(
    db_url: str, service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    """As above, with ``after_timestamp``: its events are read since a time, and the deletion
    between the session's row and its events must still not leave its state without them."""
    created = await service.create_session(app_name=APP, user_id="u1", session_id="s")
    event = user_event("first", n=1)
    await service.append_event(created, event)
    config = GetSessionConfig(after_timestamp=event.timestamp - 60)
    async with ChatMemorySessionService.from_url(db_url) as elsewhere:

        async def delete_elsewhere() -> None:
            await elsewhere.delete_session(app_name=APP, user_id="u1", session_id="s")

        with committed_before_messages(memory, delete_elsewhere) as done:
            session = await service.get_session(app_name=APP, user_id="u1", session_id="s", config=config)
        assert done
    if session is not None:
        assert (len(session.events), session.state) == (1, {"n": 1})
