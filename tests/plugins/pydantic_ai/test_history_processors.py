"""History processors (``ProcessHistory``) rewrite a run's history in place: nothing the run
produced is lost from the store, and nothing is stored twice.

Rewritten from pydantic/pydantic-ai ``tests/test_history_processor.py``
(``test_new_messages_index_during_iter_with_pruning``,
``test_history_processor_truncation_during_resumed_tool_loop_keeps_run_messages``,
``test_history_processor_deepcopy_resuming_without_prompt``), with the capability recording
the runs, on both backends.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from chatmemory_pydantic_ai import ChatMemoryCapability, load_messages
from pydantic_ai.capabilities import ProcessHistory
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from chatmemory.scope import Scope
from tests.plugins.pydantic_ai._models import Script, adder, as_json


def blank_old_tool_results(messages: list[ModelMessage]) -> list[ModelMessage]:
    """Rebuilds every tool result but the newest as a copy with its content blanked, as
    processors trimming old tool output do: the copies differ from what was stored."""
    out: list[ModelMessage] = []
    for index, message in enumerate(messages):
        if index < len(messages) - 1 and isinstance(message, ModelRequest):
            parts = [
                dataclasses.replace(p, content="[old]") if isinstance(p, ToolReturnPart) else p
                for p in message.parts
            ]
            message = dataclasses.replace(message, parts=parts)
        out.append(message)
    return out


def two_tool_steps(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    done = sum(isinstance(p, ToolReturnPart) for m in messages for p in m.parts)
    if done < 2:
        return ModelResponse(parts=[ToolCallPart("add", {"a": done, "b": 1}, tool_call_id=f"c{done}")])
    return ModelResponse(parts=[TextPart("done")])


def keep_last_two(messages: list[ModelMessage]) -> list[ModelMessage]:
    return messages[-2:] if len(messages) > 2 else messages


def deep_copies(messages: list[ModelMessage]) -> list[ModelMessage]:
    return copy.deepcopy(messages)


PROCESSORS: dict[str, Callable[[list[ModelMessage]], list[ModelMessage]]] = {
    "keep_last_two": keep_last_two,
    "deep_copies": deep_copies,
}


async def run_to_the_end(agent: Any, prompt: str, how: str) -> Any:
    if how == "run":
        return await agent.run(prompt)
    async with agent.iter(prompt) as run:
        async for _ in run:
            pass
    return run.result


@pytest.mark.parametrize("how", ["run", "iter"])
@pytest.mark.parametrize("processor", sorted(PROCESSORS))
async def test_every_message_of_a_processed_run_is_stored_once(
    alice: Scope, processor: str, how: str
) -> None:
    conv = await alice.start_conversation()
    script = Script("m")
    capability = ChatMemoryCapability(alice, conv.id)
    agent = adder(script.model, capabilities=[ProcessHistory(PROCESSORS[processor]), capability])

    first = await run_to_the_end(agent, "2+3?", how)
    second = await run_to_the_end(agent, "And again?", how)  # resumes from the store

    histories = (await alice.get_conversation(conv.id, messages=True)).histories
    assert [(h.status, [m.role for m in h.messages or []]) for h in histories] == [
        ("completed", ["user", "assistant", "tool", "assistant"])
    ] * 2
    stored = as_json(await load_messages(alice, conv.id))
    # What pydantic-ai keeps (all of it, or what the processor left) is what was stored.
    assert stored[-len(second.all_messages()) :] == as_json(second.all_messages())
    assert as_json(first.new_messages()) == stored[4 - len(first.new_messages()) : 4]


@pytest.mark.parametrize("how", ["run", "iter"])
async def test_a_stored_message_a_processor_later_rebuilds_changed_is_not_stored_again(
    alice: Scope, how: str
) -> None:
    conv = await alice.start_conversation()
    capability = ChatMemoryCapability(alice, conv.id)
    model = FunctionModel(two_tool_steps, model_name="m")
    agent = adder(model, capabilities=[ProcessHistory(blank_old_tool_results), capability])

    await run_to_the_end(agent, "Add twice", how)

    (history,) = (await alice.get_conversation(conv.id, messages=True)).histories
    # Each tool result once, in its place, as it was when the run produced it.
    assert [(m.role, m.content) for m in history.messages or []] == [
        ("user", "Add twice"),
        ("assistant", ""),
        ("tool", "1"),
        ("assistant", ""),
        ("tool", "2"),
        ("assistant", "done"),
    ]
