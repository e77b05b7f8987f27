"""A capability's first load of a conversation that another process writes to meanwhile.

The first run of a ``ChatMemoryCapability`` reads the whole conversation; later runs read only
what was stored after the newest message it read. Here another store (as another process
would) starts a run with its prompt and then adds to a run in progress, both committed while
that first read is underway (``committed_before_messages``, just before its messages are
read). The first read must be the conversation before those writes or after them: had it
taken the addition (the newest message) without the new run it had not seen start, every
later run would resume after that message and never see the new run's prompt.
"""

from __future__ import annotations

import os
import subprocess
import sys

from chatmemory_pydantic_ai import NATIVE_FORMAT, ChatMemoryCapability, to_new_messages
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart

from chatmemory import ChatMemory, Principal
from chatmemory.recording import ABANDONED, recorder_metadata
from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import Script, adder, resumed_and_read
from tests.transactions import committed_before_messages


async def test_a_first_load_across_another_process_writes_loses_none_of_them(
    memory: ChatMemory, alice: Scope, db_url: str
) -> None:
    conv = await alice.start_conversation()
    await adder(Script("fn-A").model, capabilities=[ChatMemoryCapability(alice, conv.id)]).run("sum 0")
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))
        in_progress = await other.start_run(
            conv.id,
            model="fn-X",
            messages=to_new_messages([ModelRequest(parts=[UserPromptPart("in progress")])]),
        )

        async def another_run_then_an_addition() -> None:
            prompt = ModelRequest(parts=[UserPromptPart("another run")])
            await other.start_run(conv.id, model="fn-Y", messages=to_new_messages([prompt]))
            answer = ModelResponse(parts=[TextPart("late answer")], model_name="fn-X")
            await other.append_messages(in_progress.history.id, to_new_messages([answer]))

        capability = ChatMemoryCapability(alice, conv.id)
        script = Script("fn-B")
        with committed_before_messages(memory, another_run_then_an_addition) as done:
            await adder(script.model, capabilities=[capability]).run("sum 1")
        assert done  # the other store committed while the first run read the conversation

    sent = [
        part.content
        for message in script.received[0]
        for part in message.parts
        if part.part_kind in ("user-prompt", "text")
    ]
    # The conversation as it was before the other store's writes, or after both of them.
    assert ("another run" in sent) == ("late answer" in sent)
    resumed, read = await resumed_and_read(alice, conv.id, capability)
    assert resumed == read
    texts = [part.get("content") for message in resumed for part in message["parts"]]
    assert "another run" in texts and "late answer" in texts


async def test_a_kept_capability_learns_of_runs_that_ended_without_a_message(alice: Scope) -> None:
    """A capability kept across runs reads only what is new, so it must learn of runs it read
    as going that ended since without storing a message: one that failed with its tool call
    open (resumed as a fresh read resumes it) and one whose process died (closed ``failed``,
    as a fresh read closes it)."""
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    await adder(Script("fn-A").model, capabilities=[capability]).run("sum 0")
    elsewhere = {"framework": NATIVE_FORMAT, **recorder_metadata(), "pid": os.getppid()}  # alive
    call = ModelResponse(parts=[ToolCallPart("add", {"a": 1, "b": 2}, tool_call_id="x1")], model_name="fn-X")
    other = await alice.start_run(
        conv.id,
        model="fn-X",
        messages=to_new_messages([ModelRequest(parts=[UserPromptPart("other")]), call]),
        metadata=elsewhere,
    )
    await adder(Script("fn-B").model, capabilities=[capability]).run("sum 1")  # reads it going

    await alice.finish_history(other.history.id, status="failed", error="RuntimeError: broke")
    resumed, fresh = await resumed_and_read(alice, conv.id, capability)
    assert resumed == fresh

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dying = await alice.start_run(
        conv.id,
        model="fn-X",
        messages=to_new_messages([ModelRequest(parts=[UserPromptPart("dying")])]),
        metadata=elsewhere,
    )
    await adder(Script("fn-B").model, capabilities=[capability]).run("sum 2")  # reads it going
    await alice.update_history(dying.history.id, metadata={**elsewhere, "pid": int(gone.stdout)})
    await adder(Script("fn-B").model, capabilities=[capability]).run("sum 3")
    closed = await alice.get_history(dying.history.id)
    assert (closed.status, closed.error) == ("failed", ABANDONED)
