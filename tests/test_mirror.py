"""``ConversationMirror`` when another writer commits between the two statements of its read.

On PostgreSQL, under READ COMMITTED, each statement of ``get_tail`` sees what was committed
when it began, so the conversation's counters and its newest messages can disagree: the
messages may include one the counters do not count yet. On SQLite the read holds one snapshot.
Either way the mirror must hand out no message twice and lose none, and come back to what a
fresh read answers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from chatmemory import ChatMemory, Message, NewMessage, Principal
from chatmemory._plan import Stmt
from chatmemory.mirror import ConversationMirror


def _contents(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages]


async def test_an_append_between_the_statements_of_a_read_is_neither_lost_nor_doubled(
    db_url: str, memory: ChatMemory
) -> None:
    chat = memory.scoped(Principal("alice"))
    conversation = await chat.start_conversation()
    run = await chat.start_history(conversation.id, model="m")
    await chat.append_messages(run.id, [NewMessage("user", f"m{i}") for i in range(3)])
    mirror: ConversationMirror[str] = ConversationMirror(_contents)
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))
        appended: list[str] = []

        def append_elsewhere() -> None:
            text = f"elsewhere {len(appended)}"
            asyncio.run(other.append_messages(run.id, [NewMessage("user", text)]))
            appended.append(text)

        async def read(racing: bool) -> list[str]:
            armed = racing

            def between(stmt: Stmt) -> None:
                # After the conversation's counters were read, before its messages are: another
                # store (its own connections, as another process has) commits one more message.
                nonlocal armed
                text = stmt.sql.sqlite if memory._db.is_sqlite else stmt.sql.postgres
                if armed and "FROM chat_messages" in text:
                    armed = False
                    writer = threading.Thread(target=append_elsewhere)
                    writer.start()
                    writer.join()

            memory._db.set_trace(between)
            try:
                values, _ = await mirror.read(chat, conversation.id)
            finally:
                memory._db.set_trace(None)
            assert not armed  # the other store did commit in the middle of the read
            return list(values)

        for racing in (True, False, True, False, False):  # a whole read, then refreshes
            before = len(appended)
            read_ = await read(racing)
            assert len(read_) == len(set(read_)), read_  # nothing twice
            assert read_ in (["m0", "m1", "m2", *appended[:before]], ["m0", "m1", "m2", *appended]), read_
            if not racing:  # nothing changed during it: what a fresh read answers
                assert read_ == _contents(await chat.transcript(conversation.id))
        assert read_ == ["m0", "m1", "m2", "elsewhere 0", "elsewhere 1"]
