"""A runner on one long-lived session service gives the model what a new service gives it
when another writer completes a pending message behind newer ones: every invocation reads
the session anew, so nothing read before is reused. (An event is its message's ``native``,
which completing the message leaves as it was; a message without one is no event.)"""

from __future__ import annotations

from typing import Any

import pytest
from chatmemory_adk import NATIVE_FORMAT, ChatMemorySessionService
from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.events.event import Event
from google.adk.runners import Runner
from google.genai import types

from chatmemory import ChatMemory, NewMessage, Principal
from tests.plugins.adk._agent import APP, USER, FakeLlm, add


def _runner(service: ChatMemorySessionService) -> tuple[Runner, FakeLlm]:
    llm = FakeLlm(model="fake-a")
    agent = LlmAgent(name="calc", model=llm, instruction="You add.", tools=[add])
    return Runner(app=App(name=APP, root_agent=agent), session_service=service), llm


async def _turn(runner: Runner, text: str) -> None:
    message = types.Content(role="user", parts=[types.Part(text=text)])
    async for _ in runner.run_async(user_id=USER, session_id="s", new_message=message):
        pass


def _event(author: str, role: str, text: str) -> dict[str, Any]:
    """An ADK event stored by another writer, as this service stores events."""
    event = Event(
        author=author,
        invocation_id="elsewhere",
        content=types.Content(role=role, parts=[types.Part(text=text)]),
    )
    return {"format": NATIVE_FORMAT, "data": event.model_dump(mode="json", exclude_none=True)}


@pytest.mark.parametrize("native", [True, False], ids=["adk-event", "plain"])
async def test_a_pending_message_completed_behind_newer_ones_reaches_the_model_as_a_new_service_gives_it(
    memory: ChatMemory, native: bool
) -> None:
    service = ChatMemorySessionService(memory)
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    runner, llm = _runner(service)
    await _turn(runner, "one")
    chat = memory.scoped(Principal(USER, tenant=APP))
    (summary,) = (await chat.list_conversations()).items
    # Another writer streams a reply into the session; something else is added after it.
    streaming = await chat.start_history(summary.id, model="other")
    reply = NewMessage(
        "assistant", "", status="pending", native=_event("calc", "model", "(streaming)") if native else None
    )
    (pending,) = await chat.append_messages(streaming.id, [reply])
    noted = await chat.start_history(summary.id, model="other")
    note = NewMessage("user", "a note", native=_event("user", "user", "a note") if native else None)
    await chat.append_messages(noted.id, [note])
    await _turn(runner, "two")
    await chat.complete_message(pending.id, content="the streamed reply")

    # What a new service and runner give the model, their own invocation taken out again.
    fresh_runner, fresh = _runner(ChatMemorySessionService(memory))
    await _turn(fresh_runner, "three")
    await chat.delete_history((await chat.get_conversation(summary.id)).histories[-1].id)
    await _turn(runner, "three")
    assert llm.seen[-1] == fresh.seen[-1]
    # one, its answer, [the reply as first stored, the note,] two, its answer, three
    assert len(llm.seen[-1]) == (7 if native else 5)
