"""ChatMemoryMiddleware records as the run goes, and closes runs that ended where it cannot see."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from chatmemory_langchain import ChatMemoryMiddleware
from chatmemory_langchain._recorder import PENDING_RESULT
from langchain.agents import create_agent
from langchain.agents.middleware.types import AgentMiddleware, AgentState
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.runtime import Runtime

from chatmemory import recording
from chatmemory.scope import Scope
from tests.plugins.langchain_adapter._fakes import add, call, fake
from tests.plugins.langchain_adapter._helpers import SYSTEM, agent, histories, rows, user


async def test_a_tool_result_is_stored_as_soon_as_the_tool_returns(alice: Scope) -> None:
    conv = await alice.start_conversation()
    stored_while_running: list[list[str]] = []

    @tool
    async def peek() -> str:
        """Looks at the store, while it runs, until the sibling call's result is there (it never
        would be, were results stored only once every call of the step returned)."""
        for _ in range(1000):  # about 10 s: the sibling runs in a thread, on a busy machine too
            seen = [m.content for m in await alice.transcript(conv.id)]
            if "5" in seen:
                break
            await asyncio.sleep(0.01)
        stored_while_running.append(seen)
        return "peeked"

    both = AIMessage(
        content="",
        tool_calls=[
            {"name": "add", "args": {"a": 2, "b": 3}, "id": "c-add", "type": "tool_call"},
            {"name": "peek", "args": {}, "id": "c-peek", "type": "tool_call"},
        ],
    )
    await agent(alice, conv.id, fake(both, "done"), tools=[add, peek]).ainvoke(user("2+3 and look"))

    assert stored_while_running == [["2+3 and look", "", "5"]]
    (run,) = await histories(alice, conv.id)
    assert [m.role for m in run.messages or []] == ["user", "assistant", "tool", "tool", "assistant"]


@pytest.mark.parametrize(
    ("writing", "stored"),
    [
        ("the prompt", ["user"]),
        ("the model's answer", ["user", "assistant"]),
        ("the tool's result", ["user", "assistant", "tool"]),
    ],
)
async def test_a_run_cancelled_while_the_middleware_writes_is_closed_cancelled(
    alice: Scope, monkeypatch: pytest.MonkeyPatch, writing: str, stored: list[str]
) -> None:
    """A cancel can land in the middleware's own store calls (a slow write) as well as in the
    model or tool call it wraps: the write is seen through and the run closed ``cancelled``,
    never left ``running``."""
    conv = await alice.start_conversation()
    writes = asyncio.Event()
    start_run, append_messages = alice.start_run, alice.append_messages

    async def slow(written: Any) -> Any:
        writes.set()
        await asyncio.sleep(0.5)  # a write slow to come back, cancelled meanwhile
        return written

    async def slow_start(*args: Any, **kwargs: Any) -> Any:
        started = await start_run(*args, **kwargs)
        return await slow(started) if writing == "the prompt" else started

    async def slow_append(history_id: Any, messages: Any, *args: Any, **kwargs: Any) -> Any:
        appended = await append_messages(history_id, messages, *args, **kwargs)
        roles = {m.role for m in messages}
        if {"the model's answer": "assistant", "the tool's result": "tool"}.get(writing) in roles:
            return await slow(appended)
        return appended

    monkeypatch.setattr(alice, "start_run", slow_start)
    monkeypatch.setattr(alice, "append_messages", slow_append)
    task = asyncio.ensure_future(
        agent(alice, conv.id, fake(call("add", "c1", a=2, b=3), "5")).ainvoke(user("2+3?"))
    )
    await asyncio.wait_for(writes.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)

    (run,) = await histories(alice, conv.id)
    assert (run.status, run.error) == (
        "cancelled",
        "CancelledError: the task running the agent was cancelled",
    )
    assert [m.role for m in run.messages or []] == stored


async def test_an_agent_kept_across_runs_sees_a_run_that_ended_without_a_message_as_ended(
    alice: Scope,
) -> None:
    """One agent object serving turn after turn reads only what is new, so it must learn of
    runs it read as going that have ended since without storing a message: one that failed in
    another agent object (its unanswered call then is no "still going" call), and one whose
    process died (closed ``failed`` by the next turn, as a new middleware closes it)."""
    conv = await alice.start_conversation()
    release = asyncio.Event()

    @tool
    async def slow(x: str) -> str:
        """Waits, then fails."""
        await release.wait()
        raise RuntimeError("tool broke")

    failing = asyncio.ensure_future(
        agent(alice, conv.id, fake(call("slow", "c1", x="y")), tools=[slow]).ainvoke(user("run A"))
    )
    while len(await alice.transcript(conv.id)) < 2:  # A waits in its tool
        await asyncio.sleep(0.01)
    kept_model = fake("b answer", "c answer", "d answer", "f answer")
    kept = agent(alice, conv.id, kept_model, tools=[slow])
    await kept.ainvoke(user("run B"))  # reads A as going
    release.set()
    with pytest.raises(RuntimeError, match="tool broke"):
        await failing

    await kept.ainvoke(user("run C"))
    fresh_model = fake("c answer")
    await agent(alice, conv.id, fresh_model, tools=[slow]).ainvoke(user("run C"))
    assert [m.text for m in kept_model.seen[-1]] == [m.text for m in fresh_model.seen[-1]][:-2]
    assert not any(m.text == PENDING_RESULT for m in kept_model.seen[-1])

    # A run of another process, read as going, whose process then dies.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    other = await alice.start_history(
        conv.id,
        model="m",
        metadata={"framework": "langchain", **recording.recorder_metadata(), "pid": os.getppid()},
    )
    await alice.append_messages(other.id, [{"role": "user", "content": "run E"}])
    await kept.ainvoke(user("run D"))
    assert (await alice.get_history(other.id)).status == "running"
    metadata = {**(other.metadata or {}), "pid": int(gone.stdout)}
    await alice.update_history(other.id, metadata=metadata)
    await kept.ainvoke(user("run F"))
    assert ((await alice.get_history(other.id)).status, (await alice.get_history(other.id)).error) == (
        "failed",
        recording.ABANDONED,
    )


class BrokenAfterModel(AgentMiddleware[AgentState[Any], Any, Any]):
    """Fails in its own after_model node, outside every model and tool call."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    async def aafter_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        if self.fail:
            self.fail = False
            raise RuntimeError("after_model broke")
        return None


async def test_a_run_ended_by_an_unseen_error_is_failed_by_the_threads_next_run(alice: Scope) -> None:
    conv = await alice.start_conversation()
    graph = agent(
        alice,
        conv.id,
        fake("first answer", "second answer"),
        before=[BrokenAfterModel()],
        checkpointer=InMemorySaver(),
    )
    thread: RunnableConfig = {"configurable": {"thread_id": "t-1"}}
    with pytest.raises(RuntimeError, match="after_model broke"):
        await graph.ainvoke(user("Hi"), thread)
    (run,) = await histories(alice, conv.id)
    assert run.status == "running"  # the error never reached a hook of the middleware
    assert rows(run.messages) == [("user", None, "Hi"), ("assistant", "fake-a", "first answer")]

    await graph.ainvoke(user("Again"), thread)

    first, second = await histories(alice, conv.id)
    assert first.status == "failed"
    assert first.error is not None
    assert "stopped before finishing" in first.error
    assert second.status == "completed"
    assert rows(second.messages)[-1] == ("assistant", "fake-a", "second answer")


async def test_runs_started_at_once_never_take_each_other_for_abandoned(alice: Scope) -> None:
    """Agents resuming one conversation at once from several threads, each with its own loop, as a
    threaded server's requests do: a run that reads the conversation just as another one starts
    its history leaves that history open."""
    conv = await alice.start_conversation()

    def one_run(i: int) -> None:
        middleware = ChatMemoryMiddleware(alice, conv.id)  # no loop running here: its own
        try:
            model = fake(call("add", f"c{i}", a=i, b=1), f"{i + 1}")
            create_agent(model, [add], system_prompt=SYSTEM, middleware=[middleware]).invoke(user(f"{i}+1?"))
        finally:
            middleware.close()

    def run_all() -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(one_run, range(8)))

    await asyncio.wait_for(asyncio.to_thread(run_all), timeout=30)
    recorded = [(h.status, h.error, len(h.messages or [])) for h in await histories(alice, conv.id)]
    assert recorded == [("completed", None, 4)] * 8
    assert not recording._STARTS  # no start is counted once it is over


async def test_the_keys_the_middleware_knows_its_runs_by_stay_its_own(alice: Scope) -> None:
    """``framework``, ``host``, ``pid`` and ``thread_id`` tell the middleware its runs and their
    processes (a run left behind, a paused run to continue): ``metadata=`` cannot replace them."""
    conv = await alice.start_conversation()
    own = {"framework": "my-app", "host": "elsewhere", "pid": 1, "thread_id": "mine", "app": "rag"}
    middleware = ChatMemoryMiddleware(alice, conv.id, metadata=own)
    graph = create_agent(
        fake("hi"), [add], system_prompt=SYSTEM, middleware=[middleware], checkpointer=InMemorySaver()
    )
    await graph.ainvoke(user("hello"), {"configurable": {"thread_id": "t-1"}})

    (run,) = await histories(alice, conv.id)
    assert {k: (run.metadata or {}).get(k) for k in own} == {
        "framework": "langchain",
        "host": recording.recorder_metadata()["host"],
        "pid": os.getpid(),
        "thread_id": "t-1",
        "app": "rag",
    }
