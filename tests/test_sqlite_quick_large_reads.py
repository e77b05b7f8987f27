"""SQLite: a small read of a few very large messages, which SQLite steps through in a few
hundred steps of its virtual machine, is bounded in time on its caller's thread as one past
thousands of deleted messages is: it starts over on a reader thread once its time is up."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest

from chatmemory import ChatMemory, _sqlite_driver
from tests.test_sqlite_quick_calls import _conversation_with_a_run, _statement_threads


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
