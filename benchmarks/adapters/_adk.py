"""Google ADK: ``ChatMemorySessionService`` beside ADK's ``InMemorySessionService`` and
``DatabaseSessionService``.

A turn is one ``Runner.run_async`` invocation of one agent in an existing session: the runner
reads the session, appends the user's event, calls the model with every event's content and
appends the model's reply. ``ChatMemorySessionService`` runs as its README documents it, with
``ProvenancePlugin`` on the app (which records the model called and closes each invocation's
history when the run ends).

A stored conversation is a session of that many events, one invocation per user event and
reply, appended through the service itself (untimed): each service stores events its own way,
and ADK has no bulk load.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import sqlalchemy as sa

from benchmarks._data import MODEL, Msg
from benchmarks._peers_adk import adk_sqlite_pragmas
from benchmarks._targets import Store
from benchmarks.adapters._seed import REPLY

APP = "w6"
USER = "w6"
AGENT = "assistant"
INSTRUCTION = "Be brief."


def _counting_model() -> Any:
    """An offline ``BaseLlm`` answering every request with the same text, keeping only how many
    contents it was sent (the conversation's events and the new input)."""
    from google.adk.models.base_llm import BaseLlm
    from google.adk.models.llm_request import LlmRequest
    from google.adk.models.llm_response import LlmResponse
    from google.genai import types

    class CountingLlm(BaseLlm):
        seen: int = 0

        async def generate_content_async(
            self, llm_request: LlmRequest, stream: bool = False
        ) -> AsyncGenerator[LlmResponse, None]:
            self.seen = len(llm_request.contents)
            yield LlmResponse(
                content=types.Content(role="model", parts=[types.Part(text=REPLY)]),
                model_version=MODEL,
                usage_metadata=types.GenerateContentResponseUsageMetadata(
                    prompt_token_count=10, candidates_token_count=4, total_token_count=14
                ),
            )

    return CountingLlm(model=MODEL)


class _AdkTurns:
    """One ``Runner`` over ``self._service``; each conversation is one session of it."""

    _service: Any

    def _runner(self, plugins: Sequence[Any] = ()) -> None:
        from google.adk.agents import LlmAgent
        from google.adk.apps import App
        from google.adk.runners import Runner

        self._model = _counting_model()
        agent = LlmAgent(name=AGENT, model=self._model, instruction=INSTRUCTION)
        app = App(name=APP, root_agent=agent, plugins=list(plugins))
        self._run: Any = Runner(app=app, session_service=self._service)

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        from google.adk.events import Event
        from google.genai import types

        session = await self._service.create_session(app_name=APP, user_id=USER)
        invocation = ""
        for m in messages:
            if m.role == "user":
                invocation = f"e-{uuid.uuid4().hex}"
            event = Event(
                invocation_id=invocation,
                author="user" if m.role == "user" else AGENT,
                content=types.Content(
                    role="user" if m.role == "user" else "model", parts=[types.Part(text=m.text)]
                ),
                model_version=None if m.role == "user" else MODEL,
            )
            await self._service.append_event(session, event)
            if m.role != "user":
                await self._finished(invocation)
        return session.id

    async def _finished(self, invocation: str) -> None:
        """What the service is told when an invocation ends (only chatmemory's listens)."""

    async def turn(self, session_id: str, text: str) -> int:
        from google.genai import types

        message = types.Content(role="user", parts=[types.Part(text=text)])
        async for _ in self._run.run_async(user_id=USER, session_id=session_id, new_message=message):
            pass
        return int(self._model.seen)

    async def stop(self) -> None:
        pass


class ChatMemoryServiceTurns(_AdkTurns):
    """``ChatMemorySessionService`` on a ``ChatMemory`` opened from the store's URL, with
    ``ProvenancePlugin`` on the app."""

    async def start(self, store: Store) -> None:
        from chatmemory_adk import ChatMemorySessionService, ProvenancePlugin

        from chatmemory import ChatMemory

        self._memory = await ChatMemory.open(store.url)
        self._service = ChatMemorySessionService(self._memory)
        self._runner([ProvenancePlugin(self._service)])

    async def _finished(self, invocation: str) -> None:
        await self._service.finish_invocation(invocation)

    async def stop(self) -> None:
        await self._memory.close()


class InMemoryServiceTurns(_AdkTurns):
    """ADK's ``InMemorySessionService``: sessions in this process only."""

    async def start(self, store: Store) -> None:
        from google.adk.sessions import InMemorySessionService

        self._service = InMemorySessionService()
        self._runner()


class DatabaseServiceTurns(_AdkTurns):
    """ADK's ``DatabaseSessionService`` on an engine to the store's database (on SQLite with
    the pragmas every system gets, and the foreign keys ADK turns on)."""

    async def start(self, store: Store) -> None:
        from google.adk.sessions import DatabaseSessionService
        from sqlalchemy.ext.asyncio import create_async_engine

        self._engine = create_async_engine(store.async_url)
        if store.backend == "sqlite":
            sa.event.listen(self._engine.sync_engine, "connect", adk_sqlite_pragmas)
        self._service = DatabaseSessionService(db_engine=self._engine)
        self._runner()

    async def stop(self) -> None:
        await self._service.close()
        await self._engine.dispose()
