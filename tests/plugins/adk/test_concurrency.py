"""One ``ChatMemorySessionService`` driven the way ADK's own suite and its runners drive a
session service at once: runners on threads with event loops of their own, appends
cancelled part-way, the store closed under calls, concurrent creates.

Partly ported from google/adk-python ``tests/unittests/sessions/test_session_service.py``
(the version matching google-adk 2.13): ``test_concurrent_prepare_tables_no_race_condition``
(concurrent first calls), ``test_append_event_raises_if_app_state_row_missing`` and
``test_get_user_state_available_before_session_is_created``, run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from chatmemory_adk import ChatMemorySessionService, ProvenancePlugin
from chatmemory_adk._runs import Recent
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.genai import types

from chatmemory import ChatMemory, Principal, Scope, StorageError
from chatmemory._merge import MergeOps
from tests.plugins.adk._agent import APP, USER, run_turn

DEADLINE = 60  # seconds: a call that outlives it hangs


def said(text: str, invocation_id: str, **delta: object) -> Event:
    return Event(
        invocation_id=invocation_id,
        author="user",
        content=types.Content(role="user", parts=[types.Part(text=text)]),
        actions=EventActions(state_delta=dict(delta)),
    )


async def test_runners_on_threads_with_loops_of_their_own_share_one_service(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    threads = 4
    for n in range(threads):
        await service.create_session(app_name=APP, user_id=USER, session_id=f"s{n}")

    def runner(n: int) -> None:
        async def two_turns() -> None:
            plugins = [ProvenancePlugin(service)]
            await run_turn(service, f"m{n}", f"s{n}", "please add 2 and 3", plugins=plugins)
            await run_turn(service, f"m{n}", f"s{n}", "hello", plugins=plugins)

        asyncio.run(asyncio.wait_for(two_turns(), DEADLINE))

    with ThreadPoolExecutor(threads) as pool:
        await asyncio.wait_for(
            asyncio.gather(*(asyncio.wrap_future(pool.submit(runner, n)) for n in range(threads))),
            DEADLINE * 2,
        )

    chat = memory.scoped(Principal(USER, tenant=APP))
    for n in range(threads):
        stored = await service.get_session(app_name=APP, user_id=USER, session_id=f"s{n}")
        assert stored is not None
        assert len(stored.events) == 6
    summaries = (await chat.list_conversations()).items
    assert len(summaries) == threads
    for summary in summaries:
        histories = (await chat.get_conversation(summary.id)).histories
        assert [h.status for h in histories] == ["completed", "completed"]
        assert len({h.model for h in histories}) == 1


async def test_appends_at_once_through_one_session_object_all_land_in_call_order(
    service: ChatMemorySessionService,
) -> None:
    """ADK appends through one session object at once (live mode's sender beside the runner's
    events, a live tool's response from a task of its own); ``DatabaseSessionService`` lets
    each wait for the one before it. None may be refused as stale by its sibling's write."""
    session = await service.create_session(app_name=APP, user_id=USER, session_id="s")
    events = [said(f"e{n}", "inv", **{f"k{n}": n}) for n in range(10)]
    await asyncio.wait_for(asyncio.gather(*(service.append_event(session, e) for e in events)), DEADLINE)

    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert stored is not None
    assert [e.id for e in stored.events] == [e.id for e in session.events] == [e.id for e in events]
    assert stored.state == session.state == {f"k{n}": n for n in range(10)}


async def test_an_append_refused_beside_another_of_its_invocation_takes_nothing_with_it(
    service: ChatMemorySessionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first event of an invocation opens its history; an append of the same invocation
    started while that one's write is slow to reach the store must not share the history
    before the first is through: a refused first append drops the history it opened, and with
    it would go the other's committed event."""
    session = await service.create_session(app_name=APP, user_id=USER, session_id="s")
    stale = session.model_copy(deep=True)
    await service.append_event(session, said("before", "inv-0"))
    merge, delayed = MergeOps.merge_and_append, []

    async def slow_first_write(self: Scope, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("messages") and not delayed:
            delayed.append(True)
            await asyncio.sleep(0.2)  # a slow round trip
        return await merge(self, *args, **kwargs)

    monkeypatch.setattr(MergeOps, "merge_and_append", slow_first_write)

    async def later() -> Event:
        await asyncio.sleep(0.05)
        return await service.append_event(session, said("current", "inv-1"))

    refused, appended = await asyncio.wait_for(
        asyncio.gather(service.append_event(stale, said("stale", "inv-1")), later(), return_exceptions=True),
        DEADLINE,
    )

    assert isinstance(refused, StaleSessionError)
    assert isinstance(appended, Event)
    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert stored is not None
    assert [e.content.parts[0].text for e in stored.events if e.content and e.content.parts] == [
        "before",
        "current",
    ]


async def test_a_cancelled_append_leaves_the_session_as_storage_has_it(
    service: ChatMemorySessionService,
) -> None:
    """Cancelled after 0, 1, 2, ... turns of the event loop: wherever the cancel lands, the
    session object ends as storage has it, so appending through it goes on."""
    session = await service.create_session(app_name=APP, user_id=USER, session_id="s")
    for steps in range(120):
        task = asyncio.ensure_future(service.append_event(session, said(f"x{steps}", f"i{steps}", k=steps)))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
        assert stored is not None
        assert [e.id for e in session.events] == [e.id for e in stored.events]
        assert session.state == stored.state
        await asyncio.wait_for(service.append_event(session, said(f"y{steps}", f"j{steps}")), DEADLINE)
    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert stored is not None
    assert stored.events == session.events


async def test_a_store_closed_under_calls_fails_them_clearly(db_url: str) -> None:
    memory = await ChatMemory.open(db_url)
    service = ChatMemorySessionService(memory)
    try:
        session = await service.create_session(app_name=APP, user_id=USER, session_id="s")
        calls = [
            asyncio.ensure_future(service.append_event(session.model_copy(deep=True), said("q", f"i{n}")))
            for n in range(4)
        ]
        calls.append(asyncio.ensure_future(service.list_sessions(app_name=APP)))
        calls.append(asyncio.ensure_future(service.get_session(app_name=APP, user_id=USER, session_id="s")))
        await asyncio.sleep(0)
        await asyncio.wait_for(memory.close(), DEADLINE)
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), DEADLINE)
        for outcome in outcomes:
            # A call the store finished before closing succeeded, or lost to one that did.
            ok = not isinstance(outcome, BaseException) or isinstance(outcome, (StorageError, ValueError))
            assert ok, repr(outcome)
        with pytest.raises(StorageError, match="closed"):
            await asyncio.wait_for(service.append_event(session, said("late", "late")), DEADLINE)
        with pytest.raises(StorageError, match="closed"):
            await asyncio.wait_for(run_turn(service, "m", "s", "hello"), DEADLINE)
    finally:
        await memory.close()


async def test_concurrent_first_calls_each_create_their_session(db_url: str) -> None:
    async with ChatMemorySessionService.from_url(db_url) as service:
        created = await asyncio.wait_for(
            asyncio.gather(
                *(
                    service.create_session(app_name=f"app_{n}", user_id="user", session_id=f"s{n}")
                    for n in range(5)
                )
            ),
            DEADLINE,
        )
        assert [s.id for s in created] == [f"s{n}" for n in range(5)]
        for n in range(5):
            assert (
                await service.get_session(app_name=f"app_{n}", user_id="user", session_id=f"s{n}") is not None
            )


async def test_one_session_id_created_at_once_exists_once(service: ChatMemorySessionService) -> None:
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(
                service.create_session(app_name=APP, user_id=USER, session_id="same", state={"n": n})
                for n in range(4)
            ),
            return_exceptions=True,
        ),
        DEADLINE,
    )
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(created) == 1
    assert all(isinstance(o, AlreadyExistsError) for o in outcomes if isinstance(o, BaseException))
    listed = (await service.list_sessions(app_name=APP, user_id=USER)).sessions
    assert [(s.id, s.state) for s in listed] == [("same", created[0].state)]


async def test_append_event_raises_if_app_state_is_missing(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    session = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    owner = memory.scoped(Principal("google-adk:app", tenant=APP))
    (app_doc,) = (await owner.list_conversations(archived=True)).items
    await owner.delete_conversation(app_doc.id)

    with pytest.raises(ValueError, match="App state missing"):
        await service.append_event(session, said("hi", "inv1", **{"app:k": "v"}))
    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    assert stored is not None
    assert stored.events == []


async def test_get_user_state_available_before_another_session_is_created(
    service: ChatMemorySessionService,
) -> None:
    first = await service.create_session(app_name=APP, user_id="u1")
    await service.append_event(
        first, Event(author="system", actions=EventActions(state_delta={"user:ctx": {"v": 1}}))
    )
    assert await service.get_user_state(app_name=APP, user_id="u1") == {"ctx": {"v": 1}}


async def test_a_create_cancelled_once_its_session_is_stored_completes(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    """``create_session`` stores the session, then its ``app:`` and ``user:`` state: cancelled
    as soon as the session is seen stored, it still ends with its shared state stored."""
    chat = memory.scoped(Principal(USER, tenant=APP))
    for n in range(3):
        task = asyncio.ensure_future(
            service.create_session(
                app_name=APP, user_id=USER, session_id=f"s{n}", state={"app:a": n, "user:u": n, "k": n}
            )
        )

        async def session_stored(n: int = n) -> None:
            while not any(
                c.metadata.get("session_id") == f"s{n}" for c in (await chat.list_conversations()).items
            ):
                await asyncio.sleep(0)

        await asyncio.wait_for(session_stored(), DEADLINE)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        stored = await service.get_session(app_name=APP, user_id=USER, session_id=f"s{n}")
        assert stored is not None
        assert stored.state == {"app:a": n, "user:u": n, "k": n}, n


async def test_a_session_updated_while_sessions_are_listed_is_still_listed(
    service: ChatMemorySessionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADK's database service lists in one query. Listed in pages ordered by last update, a
    session updated while a later page is read moves ahead of the pages read already: the
    listing is read again when a change committed meanwhile."""
    sessions = [
        await service.create_session(app_name=APP, user_id=USER, session_id=f"s{n}") for n in range(4)
    ]
    for n, session in enumerate(sessions):
        await service.append_event(session, said(f"hello {n}", f"inv{n}"))
    monkeypatch.setattr("chatmemory_adk.service._PAGE", 2)
    listing = Scope.list_conversations
    pages = 0

    async def list_while_a_user_talks(self: Scope, **kwargs: object) -> object:
        nonlocal pages
        page = await listing(self, **kwargs)  # type: ignore[arg-type]
        pages += 1
        if pages == 1:  # the oldest session, not read yet, gets a new event
            await service.append_event(sessions[0], said("back again", "inv-late"))
        return page

    monkeypatch.setattr(Scope, "list_conversations", list_while_a_user_talks)
    listed = await service.list_sessions(app_name=APP, user_id=USER)
    assert pages > 1
    assert sorted(s.id for s in listed.sessions) == ["s0", "s1", "s2", "s3"]


def test_the_services_caches_stay_whole_under_threads_at_once() -> None:
    """The service's caches of runs and of sessions it has made sure of (``Recent``) are shared by
    every runner on every thread: entries set, dropped and listed by threads at once, with the
    interpreter switching threads as often as it can, never fail (before they had a lock, an
    entry another thread evicted or dropped raised ``KeyError`` in most runs)."""
    cache: Recent[int, int] = Recent(size=64)
    failures: list[BaseException] = []

    def churn(seed: int) -> None:
        chosen = random.Random(seed)
        try:
            for i in range(5_000):
                key, pick = chosen.randrange(100), chosen.random()
                if pick < 0.6:
                    cache.set(key, i)
                elif pick < 0.9:
                    cache.pop_where(lambda k: k == key)  # noqa: B023 (called at once)
                else:
                    cache.items()
        except BaseException as exc:
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert len(cache.items()) <= 64
