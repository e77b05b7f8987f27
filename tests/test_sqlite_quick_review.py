"""SQLite: what makes a call small enough to run on its caller's thread. A call counts the rows
it touches, and each large value it writes as more rows (one more for each 4 KB), whichever
field holds that value: not only a message's content and inline data, but its other parts
(reasoning, a tool call's arguments, a media URL), its metadata, usage and native form, and a
conversation's or history's metadata and system prompts. A call that writes megabytes through
any of those runs on the store's threads, so it never holds the caller's event loop."""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chatmemory import ChatMemory, NewMessage, Principal
from chatmemory._db import QUICK_ROWS
from chatmemory.scope import Scope

# More than ``QUICK_ROWS`` rows of 4 KB in one value.
_LARGE = "x" * (QUICK_ROWS + 1) * 4096


def _tool_call(arguments: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [{"type": "tool_call", "id": "c1", "name": "write", "arguments": arguments}],
    }


def _reasoning(text: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [{"type": "reasoning", "text": text}, {"type": "text", "text": "ok"}],
    }


def _image_url(tail: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "image", "url": "data:image/png;base64," + tail}]}


def _metadata(value: str) -> dict[str, Any]:
    return {"role": "user", "content": "hi", "metadata": {"note": value}}


def _native(value: str) -> dict[str, Any]:
    return {"role": "user", "content": "hi", "native": {"format": "framework", "data": {"raw": value}}}


def _usage(value: str) -> dict[str, Any]:
    return {"role": "assistant", "content": "hi", "usage": {"details": [value]}}


_MESSAGES: dict[str, Callable[[str], dict[str, Any]]] = {
    "tool call arguments": _tool_call,
    "reasoning": _reasoning,
    "media url": _image_url,
    "message metadata": _metadata,
    "native form": _native,
    "usage": _usage,
}


# A call that writes ``value``; it calls ``measure()`` once its own setup is done.
_Call = Callable[[str, Callable[[], None]], Awaitable[object]]


async def _calls(chat: Scope) -> dict[str, _Call]:
    """Each write that takes a value of any size."""
    conv = await chat.start_conversation()
    run = await chat.start_history(conv.id, model="m")

    async def append(
        make: Callable[[str], dict[str, Any]], value: str, measure: Callable[[], None]
    ) -> object:
        measure()
        return await chat.append_messages(run.id, [make(value)])

    async def complete(value: str, measure: Callable[[], None]) -> object:
        pending = await chat.append_messages(run.id, [NewMessage("assistant", "", status="pending")])
        measure()
        return await chat.complete_message(pending[0].id, content=[{"type": "reasoning", "text": value}])

    async def finish(value: str, measure: Callable[[], None]) -> object:
        started = await chat.start_history(conv.id, model="m")
        measure()
        return await chat.finish_history(started.id, usage={"details": value})

    async def update_conversation(value: str, measure: Callable[[], None]) -> object:
        own = await chat.start_conversation()  # not ``conv``: its row stays small
        measure()
        return await chat.update_conversation(own.id, metadata={"note": value})

    async def merge(value: str, measure: Callable[[], None]) -> object:
        own = await chat.start_conversation()
        measure()
        return await chat.merge_and_append({own.id: {"state": value}})

    async def update_history(value: str, measure: Callable[[], None]) -> object:
        measure()
        return await chat.update_history(run.id, metadata={"note": value})

    async def start_conversation(value: str, measure: Callable[[], None]) -> object:
        measure()
        return await chat.start_conversation(metadata={"note": value})

    async def start_history(value: str, measure: Callable[[], None]) -> object:
        measure()
        return await chat.start_history(conv.id, model="m", system_prompts=[value])

    async def start_run(value: str, measure: Callable[[], None]) -> object:
        measure()
        return await chat.start_run(
            conv.id, model="m", messages=[NewMessage("user", "hi")], system_prompts=[value]
        )

    async def record_run(value: str, measure: Callable[[], None]) -> object:
        measure()
        return await chat.record_run(model="m", messages=[NewMessage("user", "hi")], metadata={"note": value})

    calls: dict[str, _Call] = {
        f"append_messages ({name})": functools.partial(append, make) for name, make in _MESSAGES.items()
    }
    calls.update(
        {
            "complete_message (reasoning)": complete,
            "start_conversation (metadata)": start_conversation,
            "update_conversation (metadata)": update_conversation,
            "merge_and_append (metadata)": merge,
            "start_history (system prompts)": start_history,
            "update_history (metadata)": update_history,
            "finish_history (usage)": finish,
            "start_run (system prompts)": start_run,
            "record_run (metadata)": record_run,
        }
    )
    return calls


async def test_a_call_writing_a_large_value_in_any_field_runs_on_the_stores_threads(tmp_path: Path) -> None:
    """Each call with a value of a few characters runs on the caller's thread; with the same
    value over ``QUICK_ROWS`` times 4 KB, on the store's threads."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat = memory.scoped(Principal("alice"))
        calls = await _calls(chat)
        here = threading.current_thread().name
        ran_on: list[str] = []
        memory._db.set_trace(lambda stmt: ran_on.append(threading.current_thread().name))
        small_elsewhere, large_here = [], []
        for name, call in calls.items():
            await call("small", ran_on.clear)
            if here not in ran_on:
                small_elsewhere.append(name)
            await call(_LARGE, ran_on.clear)
            if here in ran_on:
                large_here.append(name)
        assert small_elsewhere == []
        assert large_here == []
