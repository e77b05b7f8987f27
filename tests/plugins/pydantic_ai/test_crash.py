"""A process killed in the middle of a pydantic-ai run loses nothing the run had produced.

A child process runs an agent whose tool never returns; once the tool is running it is
killed with SIGKILL. The model's response (the tool call) must already be stored, the
history left ``running``; the next run marks it ``failed`` and resumes from it the way
pydantic-ai resumes a history whose last tool calls were never answered.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap

from chatmemory_pydantic_ai import ChatMemoryCapability
from pydantic_ai import Agent, models
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from chatmemory import ToolCallPart as StoredCall
from chatmemory.scope import Scope

models.ALLOW_MODEL_REQUESTS = False

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, ToolCallPart
    from pydantic_ai.models.function import FunctionModel
    from chatmemory import ChatMemory, Principal
    from chatmemory_pydantic_ai import ChatMemoryCapability

    def respond(messages, info):
        return ModelResponse(parts=[ToolCallPart("slow", {}, tool_call_id="call-slow")])

    async def main(url, conversation_id):
        async with ChatMemory.open(url) as memory:
            chat = memory.scoped(Principal("alice"))
            agent = Agent(FunctionModel(respond, model_name="fn-doomed"),
                          capabilities=[ChatMemoryCapability(chat, conversation_id)])

            @agent.tool_plain
            async def slow() -> str:
                print("tool running", flush=True)
                await asyncio.sleep(60)
                return "never"

            await agent.run("start the long job")

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_killed_process_leaves_its_run_stored_and_the_next_run_resumes_it(
    alice: Scope, db_url: str
) -> None:
    conv = await alice.start_conversation()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, db_url, str(conv.id), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), timeout=60)
    assert line == b"tool running\n"
    child.send_signal(signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL

    (left,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (left.status, left.model) == ("running", "fn-doomed")
    user, call = left.messages or []
    assert (user.role, user.content) == ("user", "start the long job")
    assert (call.role, call.model, call.parts) == (
        "assistant",
        "fn-doomed",
        [StoredCall(id="call-slow", name="slow", arguments={})],
    )

    seen: list[list[ModelMessage]] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(list(messages))
        return ModelResponse(parts=[TextPart("picked up")])

    agent = Agent(FunctionModel(respond, model_name="fn-next"))
    await agent.run("where were we?", capabilities=[ChatMemoryCapability(alice, conv.id)])

    first, second = (await alice.get_conversation(conv.id, messages=True)).histories
    assert first.status == "failed"
    assert first.error is not None
    assert "stopped before the run ended" in first.error
    assert second.status == "completed"
    request = seen[0][-1]
    assert [(p.part_kind, getattr(p, "outcome", None)) for p in request.parts] == [
        ("tool-return", "interrupted"),
        ("user-prompt", None),
    ]
    assert isinstance(seen[0][1], ModelResponse)
    assert seen[0][1].parts == [ToolCallPart("slow", {}, tool_call_id="call-slow")]


STREAMING_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pydantic import BaseModel
    from pydantic_ai import Agent
    from pydantic_ai.models.function import DeltaToolCall, FunctionModel
    from chatmemory import ChatMemory, Principal
    from chatmemory_pydantic_ai import ChatMemoryCapability

    class City(BaseModel):
        name: str

    async def city(messages, info):
        yield {0: DeltaToolCall(name=info.output_tools[0].name, json_args='{"name": "Paris"}',
                                tool_call_id="out-1")}

    async def main(url, conversation_id):
        async with ChatMemory.open(url) as memory:
            chat = memory.scoped(Principal("alice"))
            agent = Agent(FunctionModel(stream_function=city, model_name="fn-doomed"), output_type=City,
                          capabilities=[ChatMemoryCapability(chat, conversation_id)])
            async with agent.run_stream("capital of France?") as result:
                await result.get_output()
                print("streamed", flush=True)
                await asyncio.sleep(60)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_process_killed_once_its_stream_is_received_keeps_the_output_and_its_tool_return(
    alice: Scope, db_url: str
) -> None:
    conv = await alice.start_conversation()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STREAMING_CHILD, db_url, str(conv.id), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), timeout=60)
    assert line == b"streamed\n"
    child.send_signal(signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL

    (left,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert left.status == "running"
    assert [(m.role, m.content) for m in left.messages or ()] == [
        ("user", "capital of France?"),
        ("assistant", ""),
        ("tool", "Final result processed."),
    ]

    seen: list[list[ModelMessage]] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(list(messages))
        return ModelResponse(parts=[TextPart("and Spain's is Madrid")])

    agent = Agent(FunctionModel(respond, model_name="fn-next"))
    await agent.run("and of Spain?", capabilities=[ChatMemoryCapability(alice, conv.id)])

    first, second = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (first.status, second.status) == ("failed", "completed")
    returned, prompt = seen[0][-1].parts
    assert (returned.part_kind, getattr(returned, "content", None)) == (
        "tool-return",
        "Final result processed.",
    )
    assert prompt.part_kind == "user-prompt"
