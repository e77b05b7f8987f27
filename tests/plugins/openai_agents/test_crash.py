"""A process killed mid-run loses nothing it had recorded; a later run closes the history it left
open, and leaves running the history of a run another process is still recording."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from agents import __version__ as agents_version
from agents.models import get_default_model
from agents.testing import assistant_message
from chatmemory_openai_agents import ChatMemorySession
from chatmemory_openai_agents._record import UNCLOSED

from chatmemory import Conversation, NewMessage
from chatmemory.scope import Scope
from tests.plugins.openai_agents._support import NamedModel, make_agent

# Runs one agent turn that calls a tool, then hangs in its second model call until killed.
RUN_UNTIL_KILLED = textwrap.dedent(
    """
    import asyncio, sys
    from agents import Agent, Runner, function_tool, set_tracing_disabled
    from agents.testing import ModelStep, ScriptedModel, function_call
    from chatmemory import ChatMemory, Principal
    from chatmemory_openai_agents import ChatMemorySession

    url, conversation_id, wiring = sys.argv[1:4]

    @function_tool
    def add(a: int, b: int) -> int:
        "Add two integers."
        return a + b

    async def hang(call):
        print("in second model call", flush=True)
        await asyncio.Event().wait()

    class Named(ScriptedModel):
        model = "doomed-model"

    async def main():
        set_tracing_disabled(True)
        model = Named([[function_call("add", {"a": 2, "b": 3}, call_id="c1")], ModelStep.respond(hang)])
        agent = Agent(name="calc", instructions="You add.", model=model, tools=[add])
        async with ChatMemory.open(url) as memory:
            session = ChatMemorySession(memory.scoped(Principal("alice")), conversation_id)
            if wiring == "session.run":
                await session.run(agent, "2+3?")
            else:
                await Runner.run(agent, "2+3?", session=session)

    asyncio.run(main())
    """
)


@asynccontextmanager
async def _until_killed(
    script: str, db_url: str, conversation: Conversation, wiring: str, ready: bytes
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``script`` run in a process of its own on the conversation, once it has printed ``ready``;
    killed with SIGKILL on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        db_url,
        str(conversation.id),
        wiring,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "OPENAI_API_KEY": "sk-test-not-used"},
    )
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), timeout=120) == ready
        yield process
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()


@pytest.mark.parametrize("wiring", ["run", "session.run"])
async def test_a_killed_run_keeps_its_items_and_is_closed_later(
    wiring: str, db_url: str, alice: Scope, conversation: Conversation
) -> None:
    async with _until_killed(RUN_UNTIL_KILLED, db_url, conversation, wiring, b"in second model call\n"):
        pass

    (left,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert left.status == "running"
    assert [m.role for m in left.messages or []] == ["user", "assistant", "tool"]
    # Without hooks the session cannot see the agent: it records its default model.
    assert left.model == ("doomed-model" if wiring == "session.run" else get_default_model())

    session = ChatMemorySession(alice, conversation.id)
    model = NamedModel("next-model", [[assistant_message("5")]])
    await session.run(make_agent("calc", model), "Still there?")

    killed, later = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert (killed.status, killed.error) == ("failed", UNCLOSED)
    assert [m.role for m in killed.messages or []] == ["user", "assistant", "tool"]
    assert later.status == "completed"
    assert model.last_call is not None
    assert [item.get("type", "message") for item in model.last_call.input] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]


# Runs two runs at once on one session, each hanging in its tool until killed.
TWO_RUNS_UNTIL_KILLED = textwrap.dedent(
    """
    import asyncio, sys
    from agents import Agent, Runner, function_tool, set_tracing_disabled
    from agents.testing import ScriptedModel, function_call
    from chatmemory import ChatMemory, Principal
    from chatmemory_openai_agents import ChatMemorySession

    url, conversation_id, wiring = sys.argv[1:4]
    started = 0

    @function_tool
    async def wait_forever() -> str:
        "Wait."
        global started
        started += 1
        if started == 2:
            print("both in their tool", flush=True)
        await asyncio.Event().wait()
        return "never"

    async def main():
        set_tracing_disabled(True)
        async with ChatMemory.open(url) as memory:
            session = ChatMemorySession(memory.scoped(Principal("alice")), conversation_id)

            async def one(text, call_id):
                model = ScriptedModel([[function_call("wait_forever", {}, call_id=call_id)]])
                agent = Agent(name="waiter", model=model, tools=[wait_forever])
                if wiring == "session.run":
                    await session.run(agent, text)
                else:
                    await Runner.run(agent, text, session=session)

            await asyncio.gather(one("first", "c1"), one("second", "c2"))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("wiring", ["run", "session.run"])
async def test_every_run_of_a_killed_process_is_closed_by_the_next_run(
    wiring: str, db_url: str, alice: Scope, conversation: Conversation
) -> None:
    """Before: only the newest of the two histories was closed; the other stayed
    ``running`` for good, as no later run finds it the newest."""
    async with _until_killed(TWO_RUNS_UNTIL_KILLED, db_url, conversation, wiring, b"both in their tool\n"):
        pass
    assert [h.status for h in (await alice.get_conversation(conversation.id)).histories] == ["running"] * 2

    session = ChatMemorySession(alice, conversation.id)
    await session.run(
        make_agent("calc", NamedModel("next-model", [[assistant_message("5")]])), "Still there?"
    )

    *killed, later = (await alice.get_conversation(conversation.id)).histories
    assert [(h.status, h.error) for h in killed] == [("failed", UNCLOSED)] * 2
    assert later.status == "completed"


async def test_a_run_still_going_in_another_process_is_left_running(
    db_url: str, alice: Scope, conversation: Conversation
) -> None:
    async with _until_killed(
        RUN_UNTIL_KILLED, db_url, conversation, "session.run", b"in second model call\n"
    ) as process:
        # Another worker serves the same conversation while that run waits for its model.
        session = ChatMemorySession(alice, conversation.id)
        await session.run(make_agent("calc", NamedModel("next-model", [[assistant_message("5")]])), "Hi")
        other, mine = (await alice.get_conversation(conversation.id)).histories
        assert process.returncode is None  # still running
        assert (mine.status, (mine.metadata or {}).get("continues")) == ("completed", None)
        assert (other.status, other.error) == ("running", None)
        assert other.metadata is not None
        assert other.metadata["pid"] == process.pid


@pytest.mark.parametrize(
    ("recorder", "status"),
    [
        ({}, "failed"),  # recorded before histories named their process: taken as left behind
        ({"host": "another-host", "pid": 1}, "running"),  # its process cannot be seen from here
    ],
)
async def test_an_open_history_of_another_process_is_closed_only_when_its_process_can_be_told_gone(
    recorder: dict[str, object], status: str, alice: Scope, conversation: Conversation
) -> None:
    metadata = {"framework": "openai-agents", "framework_version": agents_version, **recorder}
    left = await alice.start_history(conversation.id, model="doomed-model", metadata=metadata)
    await alice.append_messages(left.id, [NewMessage("user", "2+3?")])

    session = ChatMemorySession(alice, conversation.id)
    await session.run(make_agent("calc", NamedModel("next-model", [[assistant_message("5")]])), "Hi")

    earlier, later = (await alice.get_conversation(conversation.id)).histories
    assert (earlier.id, earlier.status, later.status) == (left.id, status, "completed")
    if status == "failed":
        assert earlier.error == UNCLOSED
