"""get_context: the newest messages that fit a token budget, tool exchanges kept whole."""

from __future__ import annotations

import math

import pytest

from chatmemory import (
    ConversationNotFound,
    ImagePart,
    InvalidInputError,
    NewMessage,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory._context import CHARS_PER_TOKEN, MEDIA_TOKENS, MESSAGE_OVERHEAD_TOKENS, estimate_tokens
from chatmemory.scope import Scope

PNG = "iVBORw0KGgo="


def _cost(chars: int) -> int:
    return MESSAGE_OVERHEAD_TOKENS + math.ceil(chars / CHARS_PER_TOKEN)


async def _chat(scope: Scope, messages: list[NewMessage]) -> str:
    conv = await scope.start_conversation()
    run = await scope.start_history(conv.id, model="m1")
    await scope.append_messages(run.id, messages)
    return str(conv.id)


def _turns(n: int) -> list[NewMessage]:
    return [
        NewMessage("user" if i % 2 == 0 else "assistant", f"message {i:03d} " + "x" * 36) for i in range(n)
    ]


async def test_newest_messages_that_fit_in_order(alice: Scope) -> None:
    cid = await _chat(alice, _turns(10))
    per_message = _cost(48)
    context = await alice.get_context(cid, max_tokens=per_message * 3 + per_message // 2)
    assert [m.content[:11] for m in context.messages] == ["message 007", "message 008", "message 009"]
    assert context.omitted == 7
    assert context.estimated_tokens == per_message * 3
    everything = await alice.get_context(cid)
    assert len(everything.messages) == 10
    assert everything.omitted == 0
    assert [m.seq for m in everything.messages] == sorted(m.seq for m in everything.messages)


async def test_max_messages(alice: Scope) -> None:
    cid = await _chat(alice, _turns(6))
    context = await alice.get_context(cid, max_messages=2)
    assert [m.content[:11] for m in context.messages] == ["message 004", "message 005"]
    assert context.omitted == 4


async def test_tool_call_and_results_stay_together(alice: Scope) -> None:
    cid = await _chat(
        alice,
        [
            NewMessage("user", "What is the weather in Rome and Paris?"),
            NewMessage(
                "assistant",
                [
                    TextPart(text="Let me check."),
                    ToolCallPart(id="c1", name="weather", arguments={"city": "Rome"}),
                    ToolCallPart(id="c2", name="weather", arguments='{"city": "Paris"}'),
                ],
            ),
            NewMessage("tool", [ToolResultPart(call_id="c1", content="sunny " * 20)]),
            NewMessage("tool", [ToolResultPart(call_id="c2", content="rainy " * 20)]),
            NewMessage("assistant", "Sunny in Rome, rainy in Paris."),
        ],
    )
    full = await alice.get_context(cid)
    costs = [estimate_tokens(m) for m in full.messages]
    # Room for the last message and one tool result, but not the whole exchange: both go.
    context = await alice.get_context(cid, max_tokens=costs[4] + costs[3] + 1)
    assert [m.role for m in context.messages] == ["assistant"]
    assert context.omitted == 4
    exchange = sum(costs[1:])
    context = await alice.get_context(cid, max_tokens=exchange)
    assert [m.role for m in context.messages] == ["assistant", "tool", "tool", "assistant"]
    assert context.estimated_tokens == exchange
    context = await alice.get_context(cid, max_messages=3)
    assert [m.role for m in context.messages] == ["assistant"]


async def test_tool_message_without_call_id_follows_its_call(alice: Scope) -> None:
    cid = await _chat(
        alice,
        [
            NewMessage("user", "hi"),
            NewMessage("assistant", [ToolCallPart(id="c1", name="lookup")]),
            NewMessage("tool", "plain tool output"),
        ],
    )
    context = await alice.get_context(cid, max_messages=1)
    assert context.messages == []
    assert context.omitted == 3
    context = await alice.get_context(cid, max_messages=2)
    assert [m.role for m in context.messages] == ["assistant", "tool"]


async def test_estimate_counts_tool_calls_and_media(alice: Scope) -> None:
    cid = await _chat(
        alice,
        [
            NewMessage("user", [TextPart(text="abcd" * 10), ImagePart(data=PNG, media_type="image/png")]),
            NewMessage("assistant", [ToolCallPart(id="c", name="fn", arguments="12345678")]),
        ],
    )
    user, assistant = (await alice.get_context(cid)).messages
    assert estimate_tokens(user) == _cost(40) + MEDIA_TOKENS
    assert estimate_tokens(assistant) == _cost(len("fn") + 8)


async def test_pending_failed_and_deleted_messages_are_left_out(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m1")
    kept, deleted, pending, failed = await alice.append_messages(
        run.id,
        [
            NewMessage("user", "kept"),
            NewMessage("user", "deleted"),
            NewMessage("assistant", "", status="pending"),
            NewMessage("assistant", "", status="pending"),
        ],
    )
    await alice.delete_message(deleted.id)
    await alice.fail_message(failed.id, error="boom")
    context = await alice.get_context(conv.id)
    assert [m.id for m in context.messages] == [kept.id]
    assert context.omitted == 0
    await alice.complete_message(pending.id, content="done")
    assert [m.content for m in (await alice.get_context(conv.id)).messages] == ["kept", "done"]


async def test_scoping_and_bad_arguments(alice: Scope, bob: Scope) -> None:
    cid = await _chat(alice, _turns(2))
    with pytest.raises(ConversationNotFound):
        await bob.get_context(cid)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidInputError):
            await alice.get_context(cid, max_tokens=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            await alice.get_context(cid, max_messages=bad)  # type: ignore[arg-type]
    empty = await alice.start_conversation()
    context = await alice.get_context(empty.id)
    assert (context.messages, context.omitted, context.estimated_tokens) == ([], 0, 0)
    with pytest.raises(Exception, match="frozen"):
        context.omitted = 3  # type: ignore[misc]
