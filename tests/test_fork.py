"""A store used in a process forked after it was opened (a preloading server's workers, a
``multiprocessing`` pool with the ``fork`` start method) refuses its calls at once, clearly:
the threads that serve its calls stayed in the parent. The parent goes on using it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import time

from chatmemory import ChatMemory, Principal, StorageError


async def _in_the_child(memory: ChatMemory) -> dict[str, str]:
    chat = memory.scoped(Principal("alice"))
    outcomes: dict[str, str] = {}
    for name, call in [
        ("read", lambda: chat.list_conversations()),
        ("write", lambda: chat.start_conversation(title="child")),
    ]:
        try:
            await asyncio.wait_for(call(), 10)
            outcomes[name] = "worked"
        except StorageError as exc:
            outcomes[name] = str(exc)
        except TimeoutError:
            outcomes[name] = "hung"
    await asyncio.wait_for(memory.close(), 10)
    outcomes["close"] = "returned"
    return outcomes


def test_a_store_used_in_a_forked_process_refuses_its_calls_and_the_parent_goes_on(db_url: str) -> None:
    """Found by review: the child's read waited for good, and its write even ignored the
    caller's timeout."""

    async def opened() -> ChatMemory:
        return await ChatMemory.open(db_url)

    memory = asyncio.run(opened())
    try:
        chat = memory.scoped(Principal("alice"))
        asyncio.run(chat.start_conversation(title="parent"))
        reading, writing = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: answers through the pipe, never returns into pytest
            try:
                os.close(reading)
                os.write(writing, json.dumps(asyncio.run(_in_the_child(memory))).encode())
            finally:
                os._exit(0)
        os.close(writing)
        try:
            ready, _, _ = select.select([reading], [], [], 60)
            assert ready, "the child never answered"
            outcomes = json.loads(os.read(reading, 65536) or b"{}")
            deadline = time.monotonic() + 30
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                assert time.monotonic() < deadline, "the child never ended"
                time.sleep(0.01)
        finally:
            os.close(reading)
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG) == (0, 0):
                    os.kill(pid, signal.SIGKILL)  # hung: it would outlive the test
                    os.waitpid(pid, 0)

        assert outcomes["close"] == "returned"
        for name in ("read", "write"):
            assert "forked" in outcomes[name], outcomes
        titles = [c.title for c in asyncio.run(chat.list_conversations()).items]
        assert titles == ["parent"]  # the child wrote nothing, and the parent's store works
        asyncio.run(chat.start_conversation(title="parent again"))
    finally:
        asyncio.run(memory.close())
