"""Telling a history whose recording process is gone from one still being recorded."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest

from chatmemory import InvalidInputError, Native, ToolResultPart, recording
from chatmemory.recording import (
    ABANDONED,
    LIVE_HISTORIES,
    abandoned,
    model_label,
    native_message,
    recorder_metadata,
    run_error,
    settled,
    starting,
    starting_in,
)
from chatmemory.scope import Scope
from tests.unstorable import too_deep


async def test_a_running_history_is_abandoned_once_its_recorder_is_gone(alice: Scope) -> None:
    conv = await alice.start_conversation()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(gone.stdout)
    metadata = {"framework": "demo", **recorder_metadata(), "pid": dead_pid}
    dead = await alice.start_history(conv.id, model="m", metadata=metadata)
    assert abandoned(dead, framework="demo")
    assert not abandoned(dead, framework="another")  # only the adapter's own histories

    mine = await alice.start_history(
        conv.id, model="m", metadata={"framework": "demo", **recorder_metadata()}
    )
    assert recorder_metadata()["pid"] == os.getpid()
    assert abandoned(mine, framework="demo")  # this process, but not recording it
    LIVE_HISTORIES.add(mine.id)
    try:
        assert not abandoned(mine, framework="demo")
    finally:
        LIVE_HISTORIES.discard(mine.id)

    closed = await alice.finish_history(dead.id, status="failed", error=ABANDONED)
    assert not abandoned(closed, framework="demo")
    elsewhere = await alice.start_history(
        conv.id, model="m", metadata={"framework": "demo", "host": "another-host", "pid": dead_pid}
    )
    assert not abandoned(elsewhere, framework="demo")


async def test_settled_sees_a_write_through_a_cancelled_caller_then_is_cancelled() -> None:
    gate = asyncio.Event()
    ended: list[str] = []

    async def write(fail: bool) -> str:
        await gate.wait()
        ended.append("written")
        if fail:
            raise ValueError("refused")
        return "done"

    gate.set()
    assert await settled(write(False)) == "done"
    gate.clear()
    for fail in (False, True):
        caller = asyncio.create_task(settled(write(fail)))
        await asyncio.sleep(0)
        caller.cancel()
        await asyncio.sleep(0)
        caller.cancel()  # cancelled again while it waits: it still waits
        await asyncio.sleep(0)
        assert not caller.done()
        gate.set()
        await asyncio.wait({caller}, timeout=5)
        assert caller.cancelled()  # neither the result nor the write's error takes its place
        gate.clear()
    assert ended == ["written"] * 3


def test_run_error_says_what_a_cancellation_stopped() -> None:
    assert run_error(asyncio.CancelledError()) == "CancelledError: the task running the agent was cancelled"
    assert run_error(asyncio.CancelledError("after its turn")) == "CancelledError: after its turn"
    # LangGraph cancels the tasks of a run it stops with a sentinel object, not a message.
    stopped = "CancelledError: the task running the agent was cancelled"
    assert run_error(asyncio.CancelledError(object())) == run_error(asyncio.CancelledError("")) == stopped
    assert run_error(ValueError("x" * 50), limit=20) == "ValueError: " + "x" * 8


def test_starts_are_counted_per_conversation_and_forgotten_once_ended() -> None:
    conversation = uuid.uuid4()
    with starting(conversation), starting(str(conversation)):
        assert starting_in(conversation) and starting_in(str(conversation).upper())
        assert not starting_in(uuid.uuid4())
    assert not starting_in(conversation)
    assert str(conversation) not in recording._STARTS  # nothing kept once no start is under way


def test_a_model_name_is_kept_as_the_store_takes_it() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/" + "p" * 200 + "/end"
    label = model_label(arn)
    assert label is not None and len(label) == 200
    head, tail = label.split("…")
    assert arn.startswith(head) and arn.endswith(tail) and tail.endswith("/end")
    assert model_label("gpt-5") == "gpt-5"
    assert model_label("x" * 200) == "x" * 200
    assert model_label("") is None and model_label("  ") is None and model_label(None) is None


def test_a_native_form_holding_a_float_json_cannot_hold_keeps_null_in_its_place() -> None:
    fields = {"role": "assistant", "content": "hi"}
    data = {"logprobs": [{"token": "hi", "logprob": float("-inf")}], "score": float("nan")}
    message = native_message(fields, "demo", data)
    assert message.native is not None
    assert message.native.data == {"logprobs": [{"token": "hi", "logprob": None}], "score": None}
    assert native_message(fields, "demo", {"fine": 1.5}).native == Native(format="demo", data={"fine": 1.5})
    with pytest.raises(InvalidInputError) as refused:
        native_message(fields, "demo", {"trace": too_deep()})
    assert refused.value.field == "native.data"


def test_text_neither_backend_can_hold_is_stored_with_the_replacement_character() -> None:
    # A tool's output read from a binary file holds NUL characters; a file name decoded with
    # surrogateescape, lone surrogates. Both forms get U+FFFD in their place; a pair stays one.
    fields = {
        "role": "tool",
        "content": [ToolResultPart(call_id="c1", content="PK\x03\x04\x00\x00 ls: caf\udce9.txt")],
        "metadata": {"path\x00": "caf\udce9"},
    }
    message = native_message(fields, "demo", {"output": "PK\x03\x04\x00\x00", "emoji": "\ud83d\ude00"})
    assert message.content == [
        ToolResultPart(call_id="c1", content="PK\x03\x04\ufffd\ufffd ls: caf\ufffd.txt")
    ]
    assert message.metadata == {"path\ufffd": "caf\ufffd"}
    assert message.native == Native(
        format="demo", data={"output": "PK\x03\x04\ufffd\ufffd", "emoji": "\U0001f600"}
    )
