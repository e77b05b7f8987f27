"""One ChatMemory used from several threads, each running its own event loop.

Agent frameworks drive their stores from thread pools (each thread with its own
``asyncio.run``); the store must work there, or refuse at once, and never hang.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from chatmemory import ChatMemory, NewMessage, Principal
from chatmemory.scope import Scope

THREADS = 4
TURNS = 15


def _writer(chat: Scope, history_id: object, writer: int) -> list[str]:
    async def go() -> list[str]:
        for turn in range(TURNS):
            await chat.append_messages(
                str(history_id),
                [NewMessage("user", f"{writer}:{turn}:q"), NewMessage("assistant", f"{writer}:{turn}:a")],
            )
        page = await chat.list_messages(history_id=str(history_id), limit=1)
        return [m.content for m in page.items]

    return asyncio.run(go())


async def _check(chat: Scope, conversation_id: object) -> None:
    stored = [m.content for m in await chat.transcript(str(conversation_id))]
    assert len(stored) == THREADS * TURNS * 2
    for writer in range(THREADS):
        mine = [text for text in stored if text.startswith(f"{writer}:")]
        expected = [f"{writer}:{t}:{r}" for t in range(TURNS) for r in "qa"]
        assert mine == expected
    # Each append is one batch: a question is always followed by its own answer.
    for question, answer in zip(stored[::2], stored[1::2], strict=True):
        assert question[:-1] == answer[:-1]


async def test_threads_with_their_own_loops_share_one_store(memory: ChatMemory, alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(THREADS) as pool:
        results = await asyncio.wait_for(
            asyncio.gather(*(loop.run_in_executor(pool, _writer, alice, run.id, w) for w in range(THREADS))),
            timeout=120,
        )
    assert all(len(r) == 1 for r in results)
    await _check(alice, conv.id)


def test_store_opened_on_another_threads_loop_serves_new_loops_and_closes_from_any(db_url: str) -> None:
    home = asyncio.new_event_loop()
    runner = threading.Thread(target=home.run_forever, daemon=True)
    runner.start()

    async def open_store() -> tuple[ChatMemory, Scope, object, object]:
        memory = await ChatMemory.open(db_url)
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        run = await chat.start_history(conv.id, model="m")
        await chat.list_messages(conversation_id=conv.id)
        return memory, chat, conv.id, run.id

    try:
        memory, chat, conv_id, run_id = asyncio.run_coroutine_threadsafe(open_store(), home).result(60)
        with ThreadPoolExecutor(THREADS) as pool:
            for result in [pool.submit(_writer, chat, run_id, w) for w in range(THREADS)]:
                assert len(result.result(timeout=120)) == 1

        async def finish() -> None:  # on yet another loop
            await _check(chat, conv_id)
            await asyncio.wait_for(memory.close(), timeout=30)

        asyncio.run(finish())
    finally:
        home.call_soon_threadsafe(home.stop)
        runner.join(10)
        home.close()
