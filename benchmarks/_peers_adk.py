"""Google ADK's ``DatabaseSessionService``: a conversation is a session, a message an event.

ADK appends one event per call, so a turn is two calls and a batch of 100 is 100 calls.
Its ``list_sessions`` returns every session unpaged, oldest first, without previews, so the
listing workload is n/a.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from benchmarks._data import Msg
from benchmarks._system import APPEND, CONCURRENT, READ_ALL, READ_LAST, Family, unsupported
from benchmarks._targets import SQLITE_PEER_PRAGMAS, Store

APP = "bench"


def adk_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # What ADK sets itself on engines it builds (foreign keys), plus the shared durability settings.
    cursor = dbapi_connection.cursor()
    for pragma in (*SQLITE_PEER_PRAGMAS, "foreign_keys = ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class AdkSessionSystem:
    """One ADK session per conversation; the service on one engine."""

    name = "google-adk DatabaseSessionService"
    family: Family = "peer"
    abilities = frozenset({APPEND, READ_LAST, READ_ALL, CONCURRENT})
    shares_schema = False

    async def start(self, store: Store) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        sessions = importlib.import_module("google.adk.sessions")
        self._config: Any = importlib.import_module(
            "google.adk.sessions.base_session_service"
        ).GetSessionConfig
        self._event: Any = importlib.import_module("google.adk.events").Event
        self._types: Any = importlib.import_module("google.genai.types")
        self._engine = create_async_engine(store.async_url)
        if store.backend == "sqlite":
            sa.event.listen(self._engine.sync_engine, "connect", adk_sqlite_pragmas)
        self._service: Any = sessions.DatabaseSessionService(db_engine=self._engine)

    async def conversation(self, owner: str) -> Any:
        return await self._service.create_session(app_name=APP, user_id=owner)

    async def append(self, conversation: Any, batch: Sequence[Msg]) -> None:
        invocation = f"inv-{uuid.uuid4().hex}"
        for m in batch:
            role = "user" if m.role == "user" else "model"
            event = self._event(
                author="user" if m.role == "user" else "assistant",
                invocation_id=invocation,
                content=self._types.Content(role=role, parts=[self._types.Part(text=m.text)]),
            )
            await self._service.append_event(conversation, event)

    async def _events(self, conversation: Any, config: Any) -> list[str]:
        session = await self._service.get_session(
            app_name=APP, user_id=conversation.user_id, session_id=conversation.id, config=config
        )
        return [str(e.content.parts[0].text) for e in session.events]

    async def read_last(self, conversation: Any, n: int) -> list[str]:
        return await self._events(conversation, self._config(num_recent_events=n))

    async def read_all(self, conversation: Any) -> list[str]:
        return await self._events(conversation, None)

    async def recent(self, owner: str, n: int) -> list[str | None]:
        raise unsupported(self.name)

    async def stop(self) -> None:
        await self._service.close()
        await self._engine.dispose()
