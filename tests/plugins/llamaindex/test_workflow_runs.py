"""Each LlamaIndex workflow run (an agent's ``run``) that writes to a key is one history,
told from other runs by LlamaIndex's instrumentation, whatever the roles of its messages.

CodeAct stores its code's results as user messages and ReAct its reply rebuilt from text;
two runs may write one key at once; a run's process may die before its reply. Each agent
is LlamaIndex's own, driven by an offline mock LLM, and what it stores is compared with
what LlamaIndex's ``SimpleChatStore`` holds after the same run.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import pytest
from chatmemory_llamaindex import _provenance
from chatmemory_llamaindex._keyed import RUN_FIELD, UNANSWERED
from llama_index.core.agent.workflow import AgentWorkflow, CodeActAgent, FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.llms import ChatMessage
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import Event, StartEvent, StopEvent, Workflow, step
from pydantic import Field

from chatmemory import History
from chatmemory.scope import Scope
from tests.plugins.llamaindex._llm import NamedMockLLM, add
from tests.plugins.llamaindex.test_run_edges import remembering

pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
    # ReActAgent asks its context whether it runs, from within a step.
    pytest.mark.filterwarnings("ignore:is_running called from within a step:DeprecationWarning"),
]


class Scripted(NamedMockLLM):
    """Answers with the next of ``script``, as text."""

    script: list[str] = Field(default_factory=list)

    def _respond(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self.seen.append(list(messages))
        return ChatMessage(role="assistant", content=self.script.pop(0))


async def run_code(code: str) -> dict[str, Any]:
    return {"output": "5"}


def code_agent(model: str) -> CodeActAgent:
    llm = Scripted(model, script=["Let me compute.\n<execute>\nprint(2 + 3)\n</execute>", "The sum is 5."])
    return CodeActAgent(code_execute_fn=run_code, llm=llm)


def react_agent(model: str) -> ReActAgent:
    steps = [
        'Thought: I need to add.\nAction: add\nAction Input: {"a": 2, "b": 3}',
        "Thought: I can answer.\nAnswer: 5",
    ]
    return ReActAgent(tools=[add], llm=Scripted(model, script=steps))


async def theirs(agent: Any) -> list[tuple[str, str | None]]:
    """What LlamaIndex's own store holds after the same run."""
    store = SimpleChatStore()
    memory = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="k")
    await agent.run(user_msg="add 2 and 3", memory=memory)
    return [(m.role.value, m.content) for m in store.get_messages("k")]


async def next_run(memory: Any, model: str, prompt: str) -> None:
    """A ``FunctionAgent`` run of ``model`` (which can call ``add``) on ``memory``."""
    agent = FunctionAgent(tools=[add], llm=NamedMockLLM(model), system_prompt="S")
    await agent.run(user_msg=prompt, memory=memory)


async def histories(alice: Scope) -> list[History]:
    (conversation,) = (await alice.list_conversations()).items
    return (await alice.get_conversation(conversation.id, messages=True)).histories


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_a_codeact_run_is_one_history_though_its_code_results_are_user_messages(
    alice: Scope, kind: str
) -> None:
    remembered, store = remembering(kind, alice)
    answer = await code_agent("mock-code").run(user_msg="add 2 and 3", memory=remembered)
    assert str(answer) == "The sum is 5."
    stored = [(m.role.value, m.content) for m in await remembered.aget_all()]
    assert stored == await theirs(code_agent("mock-code"))
    assert [role for role, _ in stored] == ["user", "assistant", "user", "assistant"]

    (run,) = await histories(alice)
    assert (run.model, run.status) == ("mock-code", "running")
    # The code and the answer are rebuilt from the reply's text: each takes the model of
    # its run's latest LLM call.
    assert [(m.role, m.model) for m in run.messages or []] == [
        ("user", None),
        ("assistant", "mock-code"),
        ("user", None),
        ("assistant", "mock-code"),
    ]

    await next_run(remembered, "mock-next", "thanks")
    first, second = await histories(alice)
    assert (first.id, first.status, first.error) == (run.id, "completed", None)
    assert [m.content for m in second.messages or []] == ["thanks", "saw 6 messages"]
    store.close()


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_a_react_runs_reply_rebuilt_from_text_names_its_model(alice: Scope, kind: str) -> None:
    remembered, store = remembering(kind, alice)
    assert str(await react_agent("mock-react").run(user_msg="add 2 and 3", memory=remembered)) == "5"
    stored = [(m.role.value, m.content) for m in await remembered.aget_all()]
    assert stored == await theirs(react_agent("mock-react"))

    (run,) = await histories(alice)
    assert run.model == "mock-react"
    assert [(m.role, m.model) for m in run.messages or []] == [("user", None), ("assistant", "mock-react")]
    store.close()


class HandsOff(NamedMockLLM):
    """Hands the run off to the ``writer`` agent."""

    def _respond(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        args = {"to_agent": "writer", "reason": "it writes"}
        call = ToolCallBlock(tool_call_id="h", tool_name="handoff", tool_kwargs=args)
        return ChatMessage(role="assistant", blocks=[call])


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_an_agent_workflow_run_handed_off_is_one_history_with_each_agents_model(
    alice: Scope, kind: str
) -> None:
    remembered, store = remembering(kind, alice)
    router_llm, writer_llm = HandsOff("mock-router"), Scripted("mock-writer", script=["A poem."])
    router = FunctionAgent(
        name="router", description="Routes", llm=router_llm, system_prompt="Route.", can_handoff_to=["writer"]
    )
    writer = FunctionAgent(name="writer", description="Writes.", llm=writer_llm, system_prompt="Write.")
    workflow = AgentWorkflow(agents=[router, writer], root_agent="router")
    assert str(await workflow.run(user_msg="write a poem", memory=remembered)) == "A poem."

    (run,) = await histories(alice)
    assert (run.model, run.system_prompts) == ("mock-router", ["Route."])
    assert run.metadata[RUN_FIELD].startswith("AgentWorkflow.run-")
    assert [(m.role, m.model) for m in run.messages or []] == [
        ("user", None),
        ("assistant", "mock-router"),
        ("tool", None),
        ("assistant", "mock-writer"),
    ]
    store.close()


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_an_agent_run_inside_another_runs_tool_on_one_memory_is_a_history_of_its_own(
    alice: Scope, kind: str
) -> None:
    remembered, store = remembering(kind, alice)

    async def add(a: int, b: int) -> int:
        """Add two numbers."""
        inner = FunctionAgent(tools=[], llm=NamedMockLLM("mock-inner"), system_prompt="S")
        await inner.run(user_msg="inner question", memory=remembered)
        return a + b

    outer = FunctionAgent(tools=[add], llm=NamedMockLLM("mock-outer"), system_prompt="S")
    assert str(await outer.run(user_msg="please add 2 and 3", memory=remembered)) == "2+3=5"
    await next_run(remembered, "mock-next", "next")

    recorded = [
        (h.model, h.status, [(m.role, m.content) for m in h.messages or []]) for h in await histories(alice)
    ]
    assert recorded == [
        (
            "mock-outer",
            "completed",
            [("user", "please add 2 and 3"), ("assistant", ""), ("tool", "5"), ("assistant", "2+3=5")],
        ),
        ("mock-inner", "completed", [("user", "inner question"), ("assistant", "saw 3 messages")]),
        ("mock-next", "running", [("user", "next"), ("assistant", "saw 8 messages")]),
    ]
    store.close()


@pytest.mark.parametrize("next_store", ["same", "new"])
@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_runs_writing_one_key_at_once_each_keep_their_history(
    alice: Scope, kind: str, next_store: str
) -> None:
    """Two runs on one memory at once, each stopped in its tool until both are: their
    messages interleave in the key, and each run's still make one history. The next run
    closes both, through the same store object or a new one (as after a restart)."""
    remembered, store = remembering(kind, alice)
    both = asyncio.Barrier(2)

    async def add(a: int, b: int) -> int:  # the mock LLM calls a tool of this name
        """Add two numbers."""
        await asyncio.wait_for(both.wait(), 30)
        return a + b

    async def one(name: str) -> str:
        agent = FunctionAgent(tools=[add], llm=NamedMockLLM(f"mock-{name}"), system_prompt="S")
        return str(await agent.run(user_msg=f"please add 2 and 3 ({name})", memory=remembered))

    assert await asyncio.gather(one("a"), one("b")) == ["2+3=5", "2+3=5"]
    transcript = [m.content for m in await remembered.aget_all()]
    assert transcript[:2] == ["please add 2 and 3 (a)", "please add 2 and 3 (b)"]

    a, b = await histories(alice)
    for run, name in ((a, "a"), (b, "b")):
        assert run.model == f"mock-{name}"
        assert [(m.role, m.model) for m in run.messages or []] == [
            ("user", None),
            ("assistant", f"mock-{name}"),
            ("tool", None),
            ("assistant", f"mock-{name}"),
        ]
        assert (run.messages or [])[0].content == f"please add 2 and 3 ({name})"
    assert a.metadata[RUN_FIELD] != b.metadata[RUN_FIELD]

    # The next run closes both.
    if next_store == "new":
        store.close()
        remembered, store = remembering(kind, alice)
    await next_run(remembered, "mock-c", "thanks")
    statuses = [(h.model, h.status) for h in await histories(alice)]
    assert statuses == [("mock-a", "completed"), ("mock-b", "completed"), ("mock-c", "running")]
    store.close()


class Trivial(Workflow):
    @step
    async def done(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="done")


@pytest.mark.parametrize("others", [0, 100])
@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_a_run_cancelled_before_its_reply_is_closed_cancelled_by_the_next(
    alice: Scope, kind: str, others: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also when many other workflows of the process ended meanwhile (``others``, with the
    bound on followed runs lowered from 16,384 to 64): only the ends of runs a history records
    count against it. Every run's end did, and the cancelled run was closed by its roles."""
    monkeypatch.setattr(_provenance, "_OPEN", 64)
    remembered, store = remembering(kind, alice)
    calling = asyncio.Event()

    async def slow_add(a: int, b: int) -> int:
        """Add two numbers."""
        calling.set()
        await asyncio.sleep(60)
        return a + b

    tool = FunctionTool.from_defaults(slow_add, name="add")
    agent = FunctionAgent(tools=[tool], llm=NamedMockLLM("mock-a"), system_prompt="S")
    task = asyncio.ensure_future(agent.run(user_msg="please add 2 and 3", memory=remembered))
    await asyncio.wait_for(calling.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(others):
        await Trivial().run()

    await next_run(remembered, "mock-b", "hello")
    cancelled, later = await histories(alice)
    assert [m.content for m in cancelled.messages or []] == ["please add 2 and 3"]
    assert cancelled.status == "cancelled"
    assert cancelled.error is not None and cancelled.error.startswith("CancelledError")
    assert [m.content for m in later.messages or []] == ["hello", "saw 3 messages"]
    store.close()


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_a_run_cancelled_before_its_first_write_is_closed_cancelled_by_the_next(
    alice: Scope, kind: str
) -> None:
    """The run is cancelled while its first step is about to write the prompt: LlamaIndex ends
    the run (its span) at once and the step writes afterwards, so the history is begun after
    the run ended. It was closed ``failed``, its end never seen."""
    remembered, store = remembering(kind, alice)
    writing, go = asyncio.Event(), asyncio.Event()

    def held(put: Any) -> Any:
        async def write(*args: Any, **kwargs: Any) -> Any:
            writing.set()
            await go.wait()
            return await put(*args, **kwargs)

        return write

    for name in ("aput", "aput_messages"):
        object.__setattr__(remembered, name, held(getattr(remembered, name)))
    agent = FunctionAgent(tools=[add], llm=NamedMockLLM("mock-a"), system_prompt="S")
    task = asyncio.ensure_future(agent.run(user_msg="please add 2 and 3", memory=remembered))
    await asyncio.wait_for(writing.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    go.set()
    for _ in range(100):  # the step goes on writing
        await asyncio.sleep(0.01)
        if (await alice.list_conversations()).items:
            break

    await next_run(remembered, "mock-b", "hello")
    cancelled, later = await histories(alice)
    assert [m.content for m in cancelled.messages or []] == ["please add 2 and 3"]
    assert (cancelled.status, (cancelled.error or "")[:14]) == ("cancelled", "CancelledError")
    assert [m.content for m in later.messages or []][:1] == ["hello"]
    store.close()


class Between(Event):
    memory: Any


class WritesTwice(Workflow):
    """A workflow writing to its memory in two steps, waiting on ``go`` between them."""

    def __init__(self, go: asyncio.Event, between: asyncio.Event) -> None:
        super().__init__()
        self.go, self.between = go, between

    @step
    async def ask(self, ev: StartEvent) -> Between:
        await ev.memory.aput_messages(
            [ChatMessage(role="user", content="q"), ChatMessage(role="assistant", content="a, first part")]
        )
        self.between.set()
        await asyncio.wait_for(self.go.wait(), 30)
        return Between(memory=ev.memory)

    @step
    async def finish(self, ev: Between) -> StopEvent:
        await ev.memory.aput(ChatMessage(role="assistant", content="a, second part"))
        return StopEvent(result="done")


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_a_message_written_outside_a_run_while_it_runs_leaves_the_run_whole(
    alice: Scope, kind: str
) -> None:
    remembered, store = remembering(kind, alice)
    go, between = asyncio.Event(), asyncio.Event()
    handler = WritesTwice(go, between).run(memory=remembered)
    await asyncio.wait_for(between.wait(), 30)
    await remembered.aput(ChatMessage(role="user", content="typed meanwhile"))
    go.set()
    assert await handler == "done"

    run, outside = await histories(alice)
    assert [m.content for m in run.messages or []] == ["q", "a, first part", "a, second part"]
    assert run.metadata[RUN_FIELD].startswith("WritesTwice.run-")
    assert [m.content for m in outside.messages or []] == ["typed meanwhile"]
    assert RUN_FIELD not in outside.metadata
    store.close()


class Noop(Workflow):
    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=None)


async def test_how_a_run_ended_is_kept_however_many_other_workflows_end_meanwhile(alice: Scope) -> None:
    """The process keeps how the runs that wrote histories still open ended, not how every
    workflow of the process ended (of which it would keep only the latest ones)."""
    remembered, store = remembering("buffer", alice)
    failing = FunctionAgent(tools=[], llm=Down("mock-a"), system_prompt="S")
    with pytest.raises(RuntimeError, match="the provider is down"):
        await failing.run(user_msg="hello", memory=remembered)
    for _ in range(1100):
        await Noop().run()
    await next_run(remembered, "mock-b", "again")
    failed, later = await histories(alice)
    assert (failed.status, failed.error) == ("failed", "RuntimeError: the provider is down")
    assert [m.content for m in later.messages or []] == ["again", "saw 3 messages"]
    store.close()


class Down(NamedMockLLM):
    def _respond(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        raise RuntimeError("the provider is down")


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.memory import ChatMemoryBuffer, Memory
    from chatmemory import ChatMemory, Principal
    from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore
    from tests.plugins.llamaindex._llm import NamedMockLLM

    async def add(a: int, b: int) -> int:
        '''Add two numbers.'''
        print("tool running", flush=True)
        await asyncio.sleep(60)
        return a + b

    async def main(url, kind):
        async with ChatMemory.open(url) as memory:
            chat = memory.scoped(Principal("alice"))
            if kind == "buffer":
                store = ChatMemoryChatStore(chat)
                remembered = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="k")
            else:
                remembered = Memory.from_defaults(session_id="k", chat_store=ChatMemoryDBChatStore(chat))
            agent = FunctionAgent(tools=[add], llm=NamedMockLLM("mock-doomed"), system_prompt="S")
            await agent.run(user_msg="please add 2 and 3", memory=remembered)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.parametrize("kind", ["buffer", "memory"])
async def test_a_run_whose_process_was_killed_before_its_reply_is_closed_failed_by_the_next(
    alice: Scope, db_url: str, kind: str
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, db_url, kind, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    assert await asyncio.wait_for(child.stdout.readline(), timeout=60) == b"tool running\n"
    child.send_signal(signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL
    (left,) = await histories(alice)
    assert left.status == "running"

    remembered, store = remembering(kind, alice)
    await next_run(remembered, "mock-next", "hello")
    killed, later = await histories(alice)
    assert [m.content for m in killed.messages or []] == ["please add 2 and 3"]
    assert (killed.id, killed.status, killed.error) == (left.id, "failed", UNANSWERED)
    assert [m.content for m in later.messages or []] == ["hello", "saw 3 messages"]
    store.close()
