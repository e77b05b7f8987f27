from __future__ import annotations

from chatmemory import NewMessage
from chatmemory.scope import Scope


async def test_append_and_read_back(alice: Scope) -> None:
    conv = await alice.start_conversation("Trip")
    run = await alice.start_history(conv.id, model="gpt-4.1")
    stored = await alice.append_messages(
        run.id, [NewMessage("user", "Hi"), NewMessage("assistant", "Hello!")]
    )
    assert [m.seq for m in stored] == [1, 2]
    assert [m.content for m in await alice.transcript(conv.id)] == ["Hi", "Hello!"]
