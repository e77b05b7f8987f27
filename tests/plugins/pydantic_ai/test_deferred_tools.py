"""Human in the loop: tools needing approval, deferred tools, and runs stopped before their
tools, resumed from the store as pydantic-ai resumes them from ``result.all_messages()``.

Ported from pydantic/pydantic-ai ``tests/test_tools.py`` (``test_deferred_tool_with_approval``
style: a run ending on ``DeferredToolRequests``, then a run given ``deferred_tool_results``),
rewritten so the history goes through chatmemory: each run given the store's history must
send the model what the same run given pydantic-ai's own messages sends it.
"""

from __future__ import annotations

from typing import Any

import pytest
from chatmemory_pydantic_ai import ChatMemoryCapability, load_messages
from pydantic_ai import (
    Agent,
    CallDeferred,
    CallToolsNode,
    DeferredToolRequests,
    DeferredToolResults,
    ToolDenied,
    models,
)
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    repair_messages,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import shape

models.ALLOW_MODEL_REQUESTS = False


class _Desk:
    """An agent whose model, on a fresh prompt, calls ``add`` (runs at once) and ``call``
    (``delete`` needs approval, ``ask`` is deferred to the caller), then answers; it remembers
    every message list it was sent."""

    def __init__(self, call: str, *, add: bool = True, **kwargs: Any) -> None:
        self.call, self.add = call, add
        self.seen: list[list[ModelMessage]] = []
        self.agent: Agent[None, str | DeferredToolRequests] = Agent(
            FunctionModel(self._respond, model_name="fn-desk"),
            output_type=[str, DeferredToolRequests],
            instructions="Be careful.",
            **kwargs,
        )

        @self.agent.tool_plain(requires_approval=True)
        def delete(path: str) -> str:
            return f"deleted {path}"

        @self.agent.tool_plain
        def ask(question: str) -> str:
            raise CallDeferred

        @self.agent.tool_plain
        def add(a: int, b: int) -> int:
            return a + b

    def _respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.seen.append(list(messages))
        if messages[-1].parts[-1].part_kind == "user-prompt":
            n = len(messages)
            args = {"path": "/tmp/x"} if self.call == "delete" else {"question": "sure?"}
            parts = [ToolCallPart(self.call, args, tool_call_id=f"{self.call}-{n}")]
            if self.add:
                parts.append(ToolCallPart("add", {"a": 2, "b": 3}, tool_call_id=f"add-{n}"))
            return ModelResponse(parts=parts)
        return ModelResponse(parts=[TextPart(f"done after {len(messages)}")])


def _results(requests: DeferredToolRequests, answer: str) -> DeferredToolResults:
    if answer == "external":
        return DeferredToolResults(calls={c.tool_call_id: "yes, go" for c in requests.calls})
    verdict: bool | ToolDenied = True if answer == "approve" else ToolDenied("not that file")
    return DeferredToolResults(approvals={c.tool_call_id: verdict for c in requests.approvals})


@pytest.mark.parametrize("resumed_by", ["same_capability", "new_capability"])
@pytest.mark.parametrize("answer", ["approve", "deny", "external"])
@pytest.mark.parametrize("alongside", [True, False], ids=["with_a_tool_run", "alone"])
async def test_a_run_ending_on_deferred_tools_resumes_with_their_results_as_pydantic_ai_does(
    alice: Scope, answer: str, resumed_by: str, alongside: bool
) -> None:
    """The run asks about one call, alone or beside a call of a tool it runs: it ends on the
    response calling them, or on the request with that tool's result."""
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    call = "ask" if answer == "external" else "delete"
    ours, theirs = _Desk(call, add=alongside, capabilities=[capability]), _Desk(call, add=alongside)

    asked = await ours.agent.run("tidy up")
    kept = await theirs.agent.run("tidy up")
    assert isinstance(asked.output, DeferredToolRequests)
    (first,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert first.status == "completed"
    assert [m.role for m in first.messages] == ["user", "assistant", "tool"][: 3 if alongside else 2]
    assert shape(await load_messages(alice, conv.id)) == shape(asked.all_messages())

    if resumed_by == "new_capability":  # another process: a new agent and capability
        ours = _Desk(call, add=alongside, capabilities=[ChatMemoryCapability(alice, conv.id)])
    assert isinstance(kept.output, DeferredToolRequests)
    done = await ours.agent.run(deferred_tool_results=_results(asked.output, answer))
    theirs_done = await theirs.agent.run(
        message_history=kept.all_messages(), deferred_tool_results=_results(kept.output, answer)
    )

    assert done.output == theirs_done.output
    assert shape(ours.seen[-1]) == shape(theirs.seen[-1])
    first, second = (await alice.get_conversation(conv.id, messages=True)).histories
    assert (first.status, second.status) == ("completed", "completed")
    assert [m.role for m in second.messages] == ["tool", "assistant"]
    assert shape(await load_messages(alice, conv.id)) == shape(theirs_done.all_messages())

    # A third turn, a new prompt, sees the same history either way.
    await ours.agent.run("thanks")
    await theirs.agent.run("thanks", message_history=theirs_done.all_messages())
    assert shape(ours.seen[-1]) == shape(theirs.seen[-1])


async def test_a_new_prompt_after_deferred_tools_left_unanswered_is_refused_as_pydantic_ai_does(
    alice: Scope,
) -> None:
    """A completed run ending on the deferred calls it asked about waits for their results:
    pydantic-ai refuses a new prompt after them, from the store as from its own messages.
    Closing them out is the caller's choice: ``repair_messages`` on ``load_messages``."""
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    ours, theirs = _Desk("delete", add=False, capabilities=[capability]), _Desk("delete", add=False)
    await ours.agent.run("tidy up")
    kept = await theirs.agent.run("tidy up")

    with pytest.raises(UserError, match="unprocessed tool calls"):
        await theirs.agent.run("something else", message_history=kept.all_messages())
    with pytest.raises(UserError, match="unprocessed tool calls"):
        await ours.agent.run("something else")
    closed = repair_messages(await load_messages(alice, conv.id))
    await ours.agent.run("something else", message_history=closed)
    await theirs.agent.run("something else", message_history=repair_messages(kept.all_messages()))
    assert shape(ours.seen[-1]) == shape(theirs.seen[-1])


@pytest.mark.parametrize("resumed_by", ["same_capability", "new_capability"])
@pytest.mark.parametrize("how", ["no_prompt", "approvals"])
async def test_a_run_stopped_before_its_tools_resumes_by_running_them_as_pydantic_ai_does(
    alice: Scope, how: str, resumed_by: str
) -> None:
    """``agent.iter`` driven node by node and left at the ``CallToolsNode`` (to ask a human about
    the calls): pydantic-ai's ``run.all_messages()`` ends on the response calling the tools. A run
    given it without a new prompt runs them (and asks for the approval ``delete`` needs), one given
    ``deferred_tool_results`` for them runs them with those results. Resumed from the store, the
    same runs must do the same, not see the calls closed as interrupted."""
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    ours, theirs = _Desk("delete", capabilities=[capability]), _Desk("delete")
    kept: list[ModelMessage] = []
    for desk in (ours, theirs):
        async with desk.agent.iter("tidy up") as run:
            async for node in run:
                if isinstance(node, CallToolsNode):
                    break
        kept = run.all_messages()
    (stopped,) = (await alice.get_conversation(conv.id, messages=True)).histories
    assert stopped.status == "cancelled"
    assert [m.role for m in stopped.messages] == ["user", "assistant"]

    if resumed_by == "new_capability":
        ours = _Desk("delete", capabilities=[ChatMemoryCapability(alice, conv.id)])
    calls = {c.tool_call_id: True for c in kept[-1].parts if isinstance(c, ToolCallPart)}
    given = DeferredToolResults(approvals=calls) if how == "approvals" else None
    asked = len(ours.seen)
    done = await ours.agent.run(deferred_tool_results=given)
    theirs_done = await theirs.agent.run(message_history=kept, deferred_tool_results=given)

    assert done.output == theirs_done.output
    if how == "approvals":
        assert done.output == "done after 3"
        assert shape(ours.seen[-1]) == shape(theirs.seen[-1])
    else:
        assert isinstance(done.output, DeferredToolRequests)  # delete waits for its approval
        assert len(ours.seen) == asked  # and the model was not asked again
    assert shape(await load_messages(alice, conv.id)) == shape(theirs_done.all_messages())
    _, resumed = (await alice.get_conversation(conv.id, messages=True)).histories
    assert resumed.status == "completed"
