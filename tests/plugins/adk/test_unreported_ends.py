"""Invocations whose end ADK never reports: with ``ProvenancePlugin``, one cancelled mid-run is
closed ``cancelled`` by its session's next invocation, and one whose process was killed
``failed`` by the next process's; invocations still running, in this process or another, are
left to end themselves, and those run without the plugin are never judged."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from chatmemory_adk import ChatMemorySessionService, ProvenancePlugin
from chatmemory_adk._runs import Invocation, LiveRuns, Run
from google.adk.agents import LlmAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.apps import App, ResumabilityConfig
from google.adk.plugins.base_plugin import BasePlugin
from google.adk.runners import Runner
from google.adk.tools.agent_tool import AgentTool
from google.genai import types

from chatmemory import ChatMemory, History, Principal
from chatmemory.recording import ABANDONED, LIVE_HISTORIES, run_error
from tests.plugins.adk._agent import APP, USER, FakeLlm, add, run_turn

ROOT = Path(__file__).resolve().parents[3]
CANCELLED = run_error(asyncio.CancelledError())

# One invocation with ProvenancePlugin whose tool waits for ever, until the process is killed.
RUN_UNTIL_KILLED = textwrap.dedent(
    """
    import asyncio, sys
    from chatmemory_adk import ChatMemorySessionService, ProvenancePlugin
    from tests.plugins.adk._agent import APP, USER, run_turn

    async def wait() -> str:
        "Wait."
        print("in the tool", flush=True)
        await asyncio.Event().wait()
        return "never"

    async def main(url):
        async with ChatMemorySessionService.from_url(url) as service:
            await service.create_session(app_name=APP, user_id=USER, session_id="s")
            plugins = [ProvenancePlugin(service)]
            await run_turn(service, "doomed", "s", "please wait", tools=[wait], plugins=plugins)

    asyncio.run(main(sys.argv[1]))
    """
)


class Gate:
    """A ``wait`` tool that tells when it is entered and returns once released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = asyncio.Event()

    def tool(self) -> Callable[[], Coroutine[Any, Any, str]]:
        async def wait() -> str:
            """Wait until released."""
            self.entered.set()
            await self.released.wait()
            return "released"

        return wait


async def histories(memory: ChatMemory, session_id: str = "s") -> list[History]:
    chat = memory.scoped(Principal(USER, tenant=APP))
    for conversation in (await chat.list_conversations()).items:
        if conversation.metadata.get("session_id") == session_id:
            return list((await chat.get_conversation(conversation.id, messages=True)).histories)
    raise AssertionError(f"no session {session_id}")


def turn(
    service: ChatMemorySessionService, text: str, gate: Gate | None = None
) -> Coroutine[Any, Any, FakeLlm]:
    tools = [gate.tool()] if gate else None
    return run_turn(service, "m", "s", text, tools=tools, plugins=[ProvenancePlugin(service)])


@asynccontextmanager
async def until_killed(db_url: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """An invocation run in a process of its own, once inside its tool; killed with SIGKILL
    on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN_UNTIL_KILLED, db_url, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), timeout=120) == b"in the tool\n"
        yield process
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()


@pytest.mark.parametrize("next_service", ["same", "another"])
async def test_an_invocation_cancelled_in_its_tool_is_closed_cancelled_by_the_sessions_next(
    next_service: str, memory: ChatMemory
) -> None:
    service = ChatMemorySessionService(memory)
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    gate = Gate()
    running = asyncio.ensure_future(turn(service, "please wait", gate))
    await gate.entered.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    (left,) = await histories(memory)
    assert left.status == "running"  # ADK tells no one of the cancel
    assert left.metadata is not None
    assert (left.metadata["host"], left.metadata["pid"]) == (socket.gethostname(), os.getpid())

    # The session's next invocation, through this service object or another one.
    following = service if next_service == "same" else ChatMemorySessionService(memory)
    await turn(following, "hello")

    cancelled, later = await histories(memory)
    assert (cancelled.id, cancelled.status, cancelled.error) == (left.id, "cancelled", CANCELLED)
    assert cancelled.finished_at is not None
    assert cancelled.usage == {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}
    assert [(m.role, m.seq) for m in cancelled.messages or []] == [
        (m.role, m.seq) for m in left.messages or []
    ]
    assert [m.role for m in cancelled.messages or []] == ["user", "assistant"]
    assert later.status == "completed"
    session = await following.get_session(app_name=APP, user_id=USER, session_id="s")
    assert session is not None
    assert [e.author for e in session.events] == ["user", "calc", "user", "calc"]


async def test_an_invocation_cut_short_by_a_timeout_is_closed_by_the_tasks_next_invocation(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    """``asyncio.timeout`` cancels the invocation, not the task running it, which goes on."""
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    gate = Gate()

    async def cut_short() -> None:
        async with asyncio.timeout(None) as deadline:
            entered = asyncio.ensure_future(gate.entered.wait())
            entered.add_done_callback(lambda _: deadline.reschedule(asyncio.get_running_loop().time()))
            await turn(service, "please wait", gate)

    with pytest.raises(TimeoutError):
        await cut_short()
    await turn(service, "hello")  # in the same task

    cut_short, later = await histories(memory)
    assert (cut_short.status, cut_short.error) == ("cancelled", CANCELLED)
    assert [m.role for m in cut_short.messages or []] == ["user", "assistant"]
    assert later.status == "completed"


async def test_a_killed_process_leaves_its_invocation_to_the_next_process_which_fails_it(
    db_url: str, memory: ChatMemory
) -> None:
    async with until_killed(db_url) as process:
        pass
    (left,) = await histories(memory)
    assert left.status == "running"
    assert left.metadata is not None
    assert (left.metadata["host"], left.metadata["pid"]) == (socket.gethostname(), process.pid)

    service = ChatMemorySessionService(memory)  # this process stands for the next one
    await turn(service, "hello")

    killed, later = await histories(memory)
    assert (killed.id, killed.status, killed.error) == (left.id, "failed", ABANDONED)
    assert killed.model == "doomed"
    assert [(m.role, m.seq) for m in killed.messages or []] == [(m.role, m.seq) for m in left.messages or []]
    assert [m.role for m in killed.messages or []] == ["user", "assistant"]
    assert later.status == "completed"
    session = await service.get_session(app_name=APP, user_id=USER, session_id="s")
    assert session is not None
    assert [e.author for e in session.events] == ["user", "calc", "user", "calc"]


async def test_an_invocation_another_live_process_runs_is_left_running(
    db_url: str, memory: ChatMemory
) -> None:
    async with until_killed(db_url) as process:
        service = ChatMemorySessionService(memory)
        await turn(service, "hello")
        other, mine = await histories(memory)
        assert process.returncode is None  # still in its tool
        assert (other.status, other.error) == ("running", None)
        assert mine.status == "completed"


def _recorder(left_by: str) -> dict[str, object]:
    """The host and process a history names, as left by ``left_by``."""
    if left_by == "no-plugin":
        return {}
    if left_by == "another-host":
        return {"host": "another-host", "pid": 1}
    if left_by == "gone-process":
        done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        return {"host": socket.gethostname(), "pid": int(done.stdout)}
    return {"host": socket.gethostname(), "pid": os.getpid()}  # judged by its task instead


@pytest.mark.parametrize(
    ("left_by", "status"),
    [
        ("no-plugin", "running"),  # run without ProvenancePlugin: its end is never known
        ("another-host", "running"),  # its process cannot be seen from here
        ("gone-process", "failed"),
        ("this-process", "running"),
    ],
)
async def test_a_history_left_running_is_closed_only_when_its_process_can_be_told_gone(
    left_by: str, status: str, service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    chat = memory.scoped(Principal(USER, tenant=APP))
    (conversation,) = (await chat.list_conversations()).items
    metadata = {"invocation_id": "e-left", "framework": "google-adk", **_recorder(left_by)}
    left = await chat.start_history(conversation.id, model="doomed", metadata=metadata)

    await turn(service, "hello")

    earlier, later = await histories(memory)
    assert (earlier.id, earlier.status, later.status) == (left.id, status, "completed")
    assert earlier.error == (ABANDONED if status == "failed" else None)


async def test_an_invocation_still_running_beside_the_sessions_next_one_is_left_running(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    gate = Gate()
    running = asyncio.ensure_future(turn(service, "please wait", gate))
    await gate.entered.wait()
    await turn(service, "hello")  # in another task, while the first waits in its tool

    first, second = await histories(memory)
    assert (first.status, second.status) == ("running", "completed")
    gate.released.set()
    with pytest.raises(ValueError, match="modified in storage"):  # as DatabaseSessionService does
        await running
    first, _ = await histories(memory)
    assert first.status == "failed"  # its end reported, not taken for a cancel


# AgentTool hands its Runner the plugins the way ADK itself deprecates.
@pytest.mark.filterwarnings("ignore:The `plugins` argument is deprecated:DeprecationWarning")
async def test_an_invocation_nested_through_an_agent_tool_closes_nothing(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    """The nested invocation shares the plugins, in a session of its own (in memory)."""
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    helper = LlmAgent(name="helper", model=FakeLlm(model="inner"), instruction="Help.")
    outer = LlmAgent(
        name="calc", model=FakeLlm(model="outer"), instruction="Delegate.", tools=[AgentTool(helper)]
    )
    app = App(name=APP, root_agent=outer, plugins=[ProvenancePlugin(service)])
    runner = Runner(app=app, session_service=service)
    message = types.Content(role="user", parts=[types.Part(text="please delegate")])
    async for _ in runner.run_async(user_id=USER, session_id="s", new_message=message):
        pass
    await turn(service, "hello")

    first, second = await histories(memory)
    assert [m.role for m in first.messages or []] == ["user", "assistant", "tool", "assistant"]
    assert (first.status, second.status) == ("completed", "completed")


async def test_an_invocation_driven_one_step_per_task_stays_one_completed_history(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    """Each step of the run in a task of its own (as ``asyncio.wait_for`` runs it before
    Python 3.12): the task that announced the invocation ends long before it does."""
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    llm = FakeLlm(model="m")
    agent = LlmAgent(name="calc", model=llm, instruction="You add.", tools=[add])
    app = App(name=APP, root_agent=agent, plugins=[ProvenancePlugin(service)])
    runner = Runner(app=app, session_service=service)
    message = types.Content(role="user", parts=[types.Part(text="please add 2 and 3")])
    steps = runner.run_async(user_id=USER, session_id="s", new_message=message)
    while await asyncio.ensure_future(anext(steps, None)) is not None:
        await asyncio.sleep(0)
    (history,) = await histories(memory)
    assert history.status == "completed"
    assert [m.role for m in history.messages or []] == ["user", "assistant", "tool", "assistant"]


async def test_without_the_plugin_a_cancelled_invocation_stays_running(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    gate = Gate()
    running = asyncio.ensure_future(run_turn(service, "m", "s", "please wait", tools=[gate.tool()]))
    await gate.entered.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await run_turn(service, "m", "s", "hello")

    first, second = await histories(memory)
    assert (first.status, second.status) == ("running", "running")
    assert first.metadata is not None
    assert "pid" not in first.metadata


class Rewriting(BasePlugin):
    """A plugin ahead of ``ProvenancePlugin`` that rewrites the user's message: ADK then asks
    no later plugin about it, and the invocation's history begins before the run is announced."""

    def __init__(self) -> None:
        super().__init__(name="rewriting")

    async def on_user_message_callback(
        self, *, invocation_context: InvocationContext, user_message: types.Content
    ) -> types.Content | None:
        return user_message.model_copy(deep=True)


async def test_an_invocation_announced_after_its_history_began_is_closed_all_the_same(
    service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    gate = Gate()
    plugins = [Rewriting(), ProvenancePlugin(service)]
    running = asyncio.ensure_future(
        run_turn(service, "m", "s", "please wait", tools=[gate.tool()], plugins=plugins)
    )
    await gate.entered.wait()
    (left,) = await histories(memory)
    assert left.metadata is not None
    assert left.metadata["pid"] == os.getpid()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await run_turn(service, "m", "s", "hello", plugins=plugins)

    cancelled, later = await histories(memory)
    assert (cancelled.id, cancelled.status, cancelled.error) == (left.id, "cancelled", CANCELLED)
    assert later.status == "completed"


@pytest.mark.filterwarnings("ignore:.*ResumabilityConfig.*:UserWarning")
@pytest.mark.parametrize("meanwhile", [False, True])
async def test_a_cancelled_invocation_resumed_later_is_recorded_to_its_end(
    meanwhile: bool, service: ChatMemorySessionService, memory: ChatMemory
) -> None:
    """Resumed before the session's next invocation, it goes on in its history; after it, that
    history is closed and the rest of the invocation gets one of its own."""
    await service.create_session(app_name=APP, user_id=USER, session_id="s")
    gate = Gate()
    agent = LlmAgent(name="calc", model=FakeLlm(model="m"), instruction="You add.", tools=[gate.tool()])
    app = App(
        name=APP,
        root_agent=agent,
        plugins=[ProvenancePlugin(service)],
        resumability_config=ResumabilityConfig(is_resumable=True),
    )
    runner = Runner(app=app, session_service=service)

    async def run(**how: Any) -> None:
        async for _ in runner.run_async(user_id=USER, session_id="s", **how):
            pass

    message = types.Content(role="user", parts=[types.Part(text="please wait")])
    running = asyncio.ensure_future(run(new_message=message))
    await gate.entered.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    (left,) = await histories(memory)
    invocation_id = (left.metadata or {})["invocation_id"]
    if meanwhile:
        await turn(service, "hello")
    gate.released.set()
    await run(invocation_id=invocation_id)

    ran = [h for h in await histories(memory) if (h.metadata or {})["invocation_id"] == invocation_id]
    roles = [[m.role for m in h.messages or []] for h in ran]
    if meanwhile:
        assert [(h.status, h.error) for h in ran] == [("cancelled", CANCELLED), ("completed", None)]
        assert roles[0] == ["user", "assistant"]
    else:
        assert [(h.status, h.error) for h in ran] == [("completed", None)]
        assert roles[0][:2] == ["user", "assistant"]
    assert "tool" in roles[-1]


async def test_the_registry_of_live_runs_forgets_the_oldest_ended_ones_past_its_bound(
    memory: ChatMemory,
) -> None:
    """A server whose clients leave mid-turn and never come back to their session: the runs
    whose tasks ended are forgotten, oldest first, past the bound; runs still going are kept.
    Every one was kept for the process's life."""
    chat = memory.scoped(Principal(USER, tenant=APP))
    ended_task = asyncio.ensure_future(asyncio.sleep(0))
    await ended_task
    going = asyncio.ensure_future(asyncio.sleep(30))
    registry = LiveRuns(most=3)
    runs = []
    for n in range(6):
        task = going if n in (0, 3) else ended_task
        run = Run(uuid.uuid4(), "m", chat, invocation=Invocation((APP, USER, f"s{n}"), weakref.ref(task)))
        registry.add(uuid.uuid4(), f"i{n}", run)
        runs.append(run)
    going.cancel()

    kept = registry.pop(lambda _session, _invocation, _run: True)
    assert [runs.index(run) for run in kept] == [0, 3, 5]
    assert not {run.history_id for run in runs} & LIVE_HISTORIES
