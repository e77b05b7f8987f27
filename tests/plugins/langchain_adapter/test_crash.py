"""A process killed in the middle of a LangChain agent run loses nothing the run had produced.

A child process runs a ``create_agent`` agent whose tool never returns, and is killed with
SIGKILL while the tool runs. The input and the model's tool call must already be stored and
the history left ``running``; the next run on the conversation marks it ``failed``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap

from chatmemory import ToolCallPart
from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import fake
from tests.plugins.langchain_adapter._helpers import agent, histories, user

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from chatmemory import ChatMemory, Principal
    from chatmemory_langchain import ChatMemoryMiddleware

    class Fake(GenericFakeChatModel):
        model_name: str = "fake-doomed"
        def bind_tools(self, tools, **kwargs):
            return self

    @tool
    async def slow() -> str:
        "Never returns."
        print("tool running", flush=True)
        await asyncio.sleep(60)
        return "never"

    async def main(url, conversation_id):
        async with ChatMemory.open(url) as memory:
            chat = memory.scoped(Principal("alice"))
            call = AIMessage("", tool_calls=[{"name": "slow", "args": {}, "id": "c-slow"}])
            graph = create_agent(Fake(messages=iter([call])), [slow],
                                 middleware=[ChatMemoryMiddleware(chat, conversation_id)])
            await graph.ainvoke({"messages": [{"role": "user", "content": "start the long job"}]})

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_killed_process_leaves_its_run_stored_and_the_next_run_fails_it(
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

    (left,) = await histories(alice, conv.id)
    assert (left.status, left.model) == ("running", "fake-doomed")
    question, call = left.messages or []
    assert (question.role, question.content) == ("user", "start the long job")
    assert (call.role, call.parts) == ("assistant", [ToolCallPart(id="c-slow", name="slow", arguments={})])

    model = fake("picking up")
    await agent(alice, conv.id, model).ainvoke(user("where were we?"))

    first, second = await histories(alice, conv.id)
    assert first.status == "failed"
    assert first.error is not None
    assert "stopped before the run ended" in first.error
    assert second.status == "completed"
    assert [m.type for m in model.seen[0]] == ["system", "human", "ai", "human"]
