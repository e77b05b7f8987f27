"""A tool that reads a row another program corrupted fails with what could not be read, not with
advice to try again later: the row reads the same on every retry."""

from __future__ import annotations

from pathlib import Path

from chatmemory_mcp import build_server
from mcp import Client
from sqlalchemy import text

from chatmemory import ChatMemory, Principal
from tests.plugins.mcp_server.conftest import fail


async def test_a_corrupt_stored_message_is_not_reported_as_a_passing_outage(tmp_path: Path) -> None:
    async with ChatMemory.open(f"sqlite:///{tmp_path / 'corrupt.db'}") as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation("c")
        history = await alice.start_history(conv.id, model="m")
        await alice.append_messages(history.id, [{"role": "user", "content": "hi"}])
        async with memory._db.transaction(write=True) as conn:
            await conn.execute(text('UPDATE chat_messages SET parts = \'{"not": "parts"}\''))
        server = build_server(principal=Principal("alice"), memory=memory)
        async with Client(server) as client:  # type: ignore[arg-type]
            said = await fail(client, "list_messages", {"conversation_id": str(conv.id)})
    assert "could not be read" in said
    assert "Try again later" not in said
