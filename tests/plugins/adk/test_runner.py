"""An ADK ``LlmAgent`` run through ``Runner`` on the chatmemory session service: what is
recorded (one history per invocation, with its model; a tool call and its result), and a
resume in a new process that gives the model what ADK's in-memory service would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from chatmemory_adk import DEFAULT_MODEL, NATIVE_FORMAT, ChatMemorySessionService, ProvenancePlugin
from google.adk.sessions.in_memory_session_service import InMemorySessionService

from chatmemory import ChatMemory, Principal, ToolCallPart, ToolResultPart
from tests.plugins.adk._agent import APP, USER, run_turn

ROOT = Path(__file__).resolve().parents[3]


def resume_in_new_process(db_url: str, session_id: str, model: str, text: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.plugins.adk._agent", db_url, session_id, model, text],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


async def test_two_invocations_a_tool_call_and_a_resume_in_a_new_process(
    db_url: str, memory: ChatMemory
) -> None:
    baseline = InMemorySessionService()
    await baseline.create_session(app_name=APP, user_id=USER, session_id="s")
    await run_turn(baseline, "fake-a", "s", "please add 2 and 3")
    expected = (await run_turn(baseline, "fake-b", "s", "and again?")).seen[-1]

    service = ChatMemorySessionService(memory)
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    first = await run_turn(service, "fake-a", "s", "please add 2 and 3")
    assert len(first.seen) == 2  # the call, then the answer after the tool ran

    seen = resume_in_new_process(db_url, "s", "fake-b", "and again?")
    assert seen == expected
    assert [c["role"] for c in seen] == ["user", "model", "user", "model", "user"]

    chat = memory.scoped(Principal(USER, tenant=APP))
    (summary,) = (await chat.list_conversations()).items
    detail = await chat.get_conversation(summary.id, messages=True)
    assert [h.model for h in detail.histories] == ["fake-a", "fake-b"]
    first_run, second_run = detail.histories
    assert [(m.role, m.model) for m in first_run.messages or []] == [
        ("user", None),
        ("assistant", "fake-a"),
        ("tool", None),
        ("assistant", "fake-a"),
    ]
    call = (first_run.messages or [])[1].parts
    result = (first_run.messages or [])[2].parts
    assert call == [ToolCallPart(id="call-1", name="add", arguments={"a": 2, "b": 3})]
    assert result == [ToolResultPart(call_id="call-1", content='{"result": 5}')]
    assert (first_run.messages or [])[3].content == "2+3=5"
    assert [(m.role, m.content) for m in second_run.messages or []] == [
        ("user", "and again?"),
        ("assistant", "saw 5 contents"),
    ]
    assert all(
        m.native is not None and m.native.format == NATIVE_FORMAT for m in await chat.transcript(summary.id)
    )

    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert stored is not None
    assert len(stored.events) == 6
    assert stored.events[-1].content is not None
    assert [p.text for p in stored.events[-1].content.parts or []] == ["saw 5 contents"]


async def test_a_model_that_names_no_version_leaves_the_default(memory: ChatMemory) -> None:
    service = ChatMemorySessionService(memory)
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    await run_turn(service, "quiet-model", "s", "hello", stamp=False)
    chat = memory.scoped(Principal(USER, tenant=APP))
    (summary,) = (await chat.list_conversations()).items
    (history,) = (await chat.get_conversation(summary.id)).histories
    assert history.model == DEFAULT_MODEL


async def test_provenance_plugin_names_the_agents_model_and_system_prompt(memory: ChatMemory) -> None:
    service = ChatMemorySessionService(memory)
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    await run_turn(
        service, "quiet-model", "s", "please add 2 and 3", stamp=False, plugins=[ProvenancePlugin(service)]
    )
    chat = memory.scoped(Principal(USER, tenant=APP))
    (summary,) = (await chat.list_conversations()).items
    (history,) = (await chat.get_conversation(summary.id, messages=True)).histories
    assert history.model == "quiet-model"
    assert history.status == "completed"
    assert history.usage == {"input_tokens": 1 + 3, "output_tokens": 2, "total_tokens": 2 + 4}
    assert history.system_prompts is not None
    assert history.system_prompts[0].startswith("You add.")
    assert [(m.role, m.model) for m in history.messages or []] == [
        ("user", None),
        ("assistant", "quiet-model"),
        ("tool", None),
        ("assistant", "quiet-model"),
    ]
    stored = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert stored is not None
    assert all(e.model_version is None for e in stored.events)  # events stay as ADK made them


async def test_a_run_that_fails_leaves_a_failed_history(memory: ChatMemory) -> None:
    service = ChatMemorySessionService(memory)
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    with pytest.raises(RuntimeError, match="boom"):
        await run_turn(service, "m", "s", "explode", plugins=[ProvenancePlugin(service)])
    await run_turn(service, "m", "s", "hello again", plugins=[ProvenancePlugin(service)])
    chat = memory.scoped(Principal(USER, tenant=APP))
    (summary,) = (await chat.list_conversations()).items
    failed, completed = (await chat.get_conversation(summary.id, messages=True)).histories
    assert (failed.status, failed.error) == ("failed", "RuntimeError: boom")
    roles = [m.role for m in failed.messages or []]
    assert roles[:2] == ["user", "assistant"]  # the prompt and the call; ADK then records the failure
    assert "tool" not in roles
    assert completed.status == "completed"
