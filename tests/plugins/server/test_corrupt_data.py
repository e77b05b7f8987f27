"""A stored row another program corrupted is answered ``500 CorruptDataError`` with what could not
be read: not ``503``, which tells a client to retry a read that fails the same way every time."""

from __future__ import annotations

from sqlalchemy import text

from chatmemory import ChatMemory, Principal
from tests.plugins.server.conftest import Served, error


async def test_a_corrupt_stored_message_is_answered_500_with_what_could_not_be_read(
    api: Served, memory: ChatMemory
) -> None:
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation("c")
    history = await alice.start_history(conv.id, model="m")
    await alice.append_messages(history.id, [{"role": "user", "content": "hi"}])
    value = '\'{"not": "parts"}\'' if memory._db.is_sqlite else 'CAST(\'{"not": "parts"}\' AS jsonb)'
    async with memory._db.transaction(write=True) as conn:
        await conn.execute(text(f"UPDATE chat_messages SET parts = {value}"))
    async with api.client() as http:
        body = error(await http.get(f"/conversations/{conv.id}/messages"), 500, "CorruptDataError")
        assert body["message"].startswith("a stored message could not be read (parts: ")
        assert (await http.get("/conversations")).status_code == 200  # other reads go on
