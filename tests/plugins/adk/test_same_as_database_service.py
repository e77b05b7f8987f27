"""``ChatMemorySessionService`` side by side with ADK's own ``DatabaseSessionService``.

One seeded mix of the calls ADK's session-service tests make (google/adk-python
``tests/unittests/sessions/test_session_service.py``, the version matching google-adk 2.13):
creating sessions with ``app:``/``user:``/``temp:``/session state, appending events with
state deltas (and partial ones), reading them back with and without ``GetSessionConfig``,
listing one user's or every user's sessions, deleting, and reading user state. Each call
goes to both services (ADK's on in-memory SQLite); answers must agree after every call.
Event timestamps rise, as a runner makes them: for timestamps out of order ADK's database
service returns events by timestamp, this service (like ADK's in-memory one) as appended.
"""

from __future__ import annotations

import random
from typing import Any

from chatmemory_adk import ChatMemorySessionService
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.sessions.database_session_service import DatabaseSessionService
from google.adk.sessions.session import Session
from google.genai import types

APPS = ["app1", "app2"]
USERS = ["u1", "u2"]
SESSIONS = ["s1", "s2", "s3"]
CALLS = 200
MIX = ["create"] * 2 + ["append"] * 5 + ["get"] * 4 + ["list", "delete", "user"]
CLOCK = 4_000_000_000.0  # events' timestamps: past any creation time


def seen(session: Session | None) -> object:
    """What a caller reads of a session: ids, merged state, events, update time."""
    if session is None:
        return None
    events = [(e.id, e.author, e.actions.state_delta if e.actions else None) for e in session.events]
    # A session's creation time is each service's own clock; an event's timestamp is shared.
    updated = round(session.last_update_time, 5) if session.last_update_time >= CLOCK else "created"
    return (session.app_name, session.user_id, session.id, session.state, events, updated)


def delta(rng: random.Random, n: int) -> dict[str, Any]:
    keys = ["k", "app:k", "user:k", "temp:k", "app:other", "user:other", "other"]
    values: list[Any] = [n, f"v{n}", None, {"nested": [n, {"x": None}]}, [n, n]]
    return {key: rng.choice(values) for key in rng.sample(keys, rng.randint(0, 3))}


class Twins:
    """The same calls on both services, with the session objects each handed out."""

    def __init__(self, ours: ChatMemorySessionService, theirs: DatabaseSessionService) -> None:
        self.services: tuple[BaseSessionService, BaseSessionService] = (ours, theirs)
        self.held: dict[tuple[str, str, str], tuple[Session, Session]] = {}

    async def both(self, name: str, **kwargs: Any) -> tuple[object, object]:
        answers = []
        for service in self.services:
            try:
                answers.append(await getattr(service, name)(**kwargs))
            except AlreadyExistsError:
                answers.append(AlreadyExistsError)
        return answers[0], answers[1]


async def test_answers_as_adks_database_service(service: ChatMemorySessionService) -> None:
    theirs = DatabaseSessionService("sqlite+aiosqlite:///:memory:")
    twins = Twins(service, theirs)
    rng = random.Random(5)
    clock = CLOCK
    appended = read = 0
    try:
        for n in range(CALLS):
            app, user, sid = rng.choice(APPS), rng.choice(USERS), rng.choice(SESSIONS)
            where = {"app_name": app, "user_id": user, "session_id": sid}
            name = rng.choice(MIX)
            step = (n, name, where)
            if name == "create":
                ours, other = await twins.both("create_session", state=delta(rng, n), **where)
                if isinstance(ours, Session) and isinstance(other, Session):
                    twins.held[app, user, sid] = (ours, other)
                assert (ours is AlreadyExistsError) == (other is AlreadyExistsError), step
            elif name == "append" and (app, user, sid) in twins.held:
                clock += rng.choice([0.5, 1.0, 2.25])
                event = Event(
                    invocation_id=f"inv{n // 4}",
                    author=rng.choice(["user", "agent"]),
                    timestamp=clock,
                    partial=rng.random() < 0.1 or None,
                    content=types.Content(role="user", parts=[types.Part(text=f"t{n}")]),
                    actions=EventActions(state_delta=delta(rng, n)),
                )
                held = twins.held[app, user, sid]
                for service_, session in zip(twins.services, held, strict=True):
                    await service_.append_event(session, event.model_copy(deep=True))
                assert seen(held[0]) == seen(held[1]), step
                appended += 1
            elif name == "get":
                config = rng.choice(
                    [
                        None,
                        GetSessionConfig(num_recent_events=rng.randint(0, 3)),
                        GetSessionConfig(after_timestamp=clock - 3),
                    ]
                )
                ours, other = await twins.both("get_session", config=config, **where)
                assert seen(ours) == seen(other), step  # type: ignore[arg-type]
                read += isinstance(ours, Session) and bool(ours.events)
            elif name == "list":
                listed = await twins.both("list_sessions", app_name=app, user_id=rng.choice([user, None]))
                mine, adks = ({(s.user_id, s.id): seen(s) for s in r.sessions} for r in listed)  # type: ignore[attr-defined]
                assert mine == adks, step
            elif name == "delete":
                await twins.both("delete_session", **where)
                twins.held.pop((app, user, sid), None)
            elif name == "user":
                ours, other = await twins.both("get_user_state", app_name=app, user_id=user)
                assert ours == other, step
        assert appended > 20 and read > 5  # the mix did exercise events
    finally:
        await theirs.close()
