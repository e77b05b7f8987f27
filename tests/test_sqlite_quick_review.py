"""SQLite: what a small call may do on its caller's thread, whose event loop waits meanwhile.

A call counts the rows it touches, and each large value it writes as more rows (one more for
each 4 KB), whichever field holds that value: not only a message's content and inline data,
but its other parts (reasoning, a tool call's arguments, a media URL), its metadata, usage and
native form, and a conversation's or history's metadata and system prompts. A call that writes
megabytes through any of those runs on the store's threads.

Also which connections a store opens beside its writer, and on what: none for a database
named by a URI that keeps it in memory, and the store's own file, by its absolute path, for
one opened on a relative path; and a tail limit the database cannot take, refused as input."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from chatmemory import ChatMemory, InvalidInputError, NewMessage, Principal
from chatmemory._db import QUICK_ROWS
from chatmemory.scope import Scope
from tests.test_sqlite_quick_calls import _conversation_with_a_run

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


async def test_a_tail_limit_beyond_a_64_bit_integer_is_refused_as_input(tmp_path: Path) -> None:
    """A limit the database cannot take is the caller's error (``InvalidInputError``), as a
    negative one is, not the driver's ``OverflowError``; the largest it takes reads the whole
    tail."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        await chat.append_messages(run.id, [NewMessage("user", "hi")])
        for limit in (2**63, 10**30):
            with pytest.raises(InvalidInputError, match="limit"):
                await chat.get_tail(conv.id, limit=limit)
        assert [m.content for m in (await chat.get_tail(conv.id, limit=2**63 - 1)).messages] == ["hi"]


@pytest.mark.parametrize(
    "url",
    ["sqlite:///file::memory:?cache=shared&uri=true", "sqlite:///file:/notes?vfs=memdb&uri=true"],
    ids=["memory-uri", "memdb"],
)
async def test_an_in_memory_database_named_by_a_uri_is_reached_through_the_stores_threads_only(
    url: str,
) -> None:
    """``file::memory:?cache=shared`` (SQLAlchemy's way to share one in-memory database between
    connections), or a database of SQLite's ``memdb`` VFS, is an in-memory database as
    ``sqlite://`` is: it has no WAL, one connection's write locks out the others, and a
    connection refused a lock fails at once, so calls from threads at once (each with its own
    event loop) all succeed only through the store's own threads."""
    async with ChatMemory.open(url) as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        failed: list[BaseException] = []
        ran_on: set[str] = set()
        memory._db.set_trace(lambda stmt: ran_on.add(threading.current_thread().name))

        def caller(k: int) -> None:
            async def calls() -> None:
                for i in range(30):
                    try:
                        await chat.append_messages(run.id, [NewMessage("user", f"{k}:{i}")])
                        await chat.list_messages(conversation_id=conv.id, limit=5)
                    except Exception as exc:
                        failed.append(exc)

            asyncio.run(calls())

        threads = [threading.Thread(target=caller, args=(k,), name=f"caller-{k}") for k in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failed == []
        assert ran_on and not any(name.startswith("caller-") for name in ran_on)
        assert len(await chat.transcript(conv.id)) == 90


async def test_a_store_on_a_relative_path_keeps_its_file_when_the_working_directory_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store opens connections as calls need them (the one of small reads on the first
    small read, a reader thread's on its first read): each opens the file the store was opened
    on, not one of the same name in whatever directory the process works in by then."""
    opened_in, later_in = tmp_path / "opened", tmp_path / "later"
    opened_in.mkdir()
    later_in.mkdir()
    monkeypatch.chdir(opened_in)
    async with ChatMemory.open("sqlite:///chat.db") as memory:
        chat = memory.scoped(Principal("alice"))
        await chat.start_conversation(title="first")
        monkeypatch.chdir(later_in)
        await chat.start_conversation(title="second")
        assert sorted(c.title or "" for c in (await chat.list_conversations()).items) == ["first", "second"]
        assert sorted(c.title or "" for c in (await chat.list_conversations(limit=QUICK_ROWS + 1)).items) == [
            "first",
            "second",
        ]
    assert list(later_in.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("sqlite:///~/data/chat.db", "home/data/chat.db"),
        ("sqlite:///file:data/chat.db?uri=true", "opened/data/chat.db"),
        ("sqlite:///file:data/chat%20one.db?uri=true", "opened/data/chat one.db"),
    ],
)
async def test_a_store_opens_the_file_its_url_names_and_only_makes_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, where: str
) -> None:
    """A path from the home directory (``~``), or a ``file:`` URI relative to the working
    directory, names one file: its directory is made if need be, the store keeps reaching it
    after the process changes directory, and nothing else is made (no directory named ``~``
    or ``file:data``)."""
    home, opened_in, later_in = tmp_path / "home", tmp_path / "opened", tmp_path / "later"
    for directory in (home, opened_in, later_in):
        directory.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(opened_in)
    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(Principal("alice"))
        await chat.start_conversation(title="first")
        monkeypatch.chdir(later_in)
        await chat.start_conversation(title="second")
        assert sorted(c.title or "" for c in (await chat.list_conversations()).items) == ["first", "second"]
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert made == [where]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_dir()) == sorted(
        {"home", "opened", "later", str(Path(where).parent)}
    )
