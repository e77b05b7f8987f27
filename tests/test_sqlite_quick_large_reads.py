"""SQLite: what counts as a small read running long on its caller's thread. A read of a few
very large messages, which SQLite steps through in a few hundred steps of its virtual machine,
is bounded in time as one past thousands of deleted messages is: it starts over on a reader
thread once its time is up. Time its thread spends not running (another thread holding the
interpreter lock) is not its own: starting over on another thread would give none of it back."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest

from chatmemory import ChatMemory, NewMessage, _sqlite_driver
from chatmemory._db import QUICK_ROWS
from tests.test_sqlite_quick_calls import _conversation_with_a_run, _driver, _statement_threads


async def test_a_small_read_of_large_messages_that_runs_long_starts_over_on_a_reader_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten messages of a 1 MB inline image each: with no time allowed for a read on the
    caller's thread, a page of them stops after its first row there and is read again on a
    reader thread, which answers the same page."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        data = base64.b64encode(bytes(chat._limits.inline_bytes)).decode()
        image = {"type": "image", "data": data, "media_type": "image/png"}
        for _ in range(10):
            await chat.append_messages(run.id, [{"role": "user", "content": [image]}])
        expected = await chat.list_messages(conversation_id=conv.id, limit=10)
        assert len(expected.items) == 10

        monkeypatch.setattr(_sqlite_driver, "QUICK_READ_SECONDS", 0.0)
        threads = _statement_threads(memory)
        assert await chat.list_messages(conversation_id=conv.id, limit=10) == expected
        assert threads[0] == threading.current_thread().name
        assert [name.startswith("chatmemory-sqlite-reader") for name in threads[1:]] == [True]
        quick_reader = _driver(memory)._quick_reader
        assert quick_reader is not None and not quick_reader.in_transaction


class _Descheduled:
    """The clocks of a thread that, right after a call's first reading of the clock, stops
    running for a second (the machine busy with other processes)."""

    def __init__(self) -> None:
        self._readings = 0
        self.thread_time = time.thread_time
        self.monotonic = time.monotonic

    def perf_counter(self) -> float:
        self._readings += 1
        return time.perf_counter() + (0.0 if self._readings == 1 else 1.0)


@pytest.mark.parametrize("rows", [10, QUICK_ROWS])
async def test_a_small_read_whose_thread_stops_running_a_while_stays_on_the_callers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """A read past its time by the clock only because its thread did not run meanwhile has not
    run long (starting over on another thread would give none of that time back): it is
    answered on the caller's thread, a page of a few rows as one long enough for SQLite's
    progress handler."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/t.db") as memory:
        chat, conv, run = await _conversation_with_a_run(memory)
        await chat.append_messages(run.id, [NewMessage("user", f"m{i}") for i in range(QUICK_ROWS)])
        await chat.list_messages(conversation_id=conv.id, limit=rows)  # opens the connection
        threads = _statement_threads(memory)
        clocks = _Descheduled()
        monkeypatch.setattr(_sqlite_driver, "time", clocks)
        page = await chat.list_messages(conversation_id=conv.id, limit=rows)
        assert len(page.items) == rows
        assert clocks._readings > 1  # the clock was read again after the pause
        assert set(threads) == {threading.current_thread().name}
