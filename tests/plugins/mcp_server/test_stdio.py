"""The stdio server as real subprocesses: two principals sharing one SQLite file."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from tests.plugins.mcp_server.conftest import call, fail

SCRIPT = Path(sys.executable).parent / "chatmemory-mcp"


def _params(
    principal: str | None, db: Path, *, script: bool = False, admin: bool = False
) -> StdioServerParameters:
    env = {"CHATMEMORY_URL": f"sqlite:///{db}"}
    if principal is not None:
        env["CHATMEMORY_PRINCIPAL"] = principal
    if admin:
        env["CHATMEMORY_ADMIN"] = "true"
    if script:
        return StdioServerParameters(command=str(SCRIPT), args=["stdio"], env=env)
    return StdioServerParameters(command=sys.executable, args=["-m", "chatmemory_mcp", "stdio"], env=env)


async def test_two_processes_as_two_principals_share_one_database(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    async with (
        Client(_params("alice", db)) as alice,
        Client(_params("bob", db, script=True), mode="legacy") as bob,
    ):
        assert (await call(alice, "whoami"))["principal_id"] == "alice"
        assert (await call(bob, "whoami"))["principal_id"] == "bob"

        conv = await call(alice, "start_conversation", {"title": "alice's"})
        mine = await call(bob, "start_conversation", {"title": "bob's"})
        runs = {
            "alice": (
                alice,
                (await call(alice, "start_history", {"conversation_id": conv["id"], "model": "m"}))["id"],
            ),
            "bob": (
                bob,
                (await call(bob, "start_history", {"conversation_id": mine["id"], "model": "m"}))["id"],
            ),
        }

        async def write(name: str) -> None:
            client, history_id = runs[name]
            for i in range(10):
                message = {"role": "user", "content": f"{name} {i}", "key": f"{name}-{i}"}
                await call(client, "append_messages", {"history_id": history_id, "messages": [message]})

        async with anyio.create_task_group() as group:  # both processes write the file at once
            group.start_soon(write, "alice")
            group.start_soon(write, "bob")

        theirs = await call(bob, "list_conversations")
        assert [c["title"] for c in theirs["items"]] == ["bob's"]
        assert "not found" in await fail(bob, "get_conversation", {"conversation_id": conv["id"]})
        assert (await call(bob, "search_messages", {"query": "alice"}))["items"] == []
        page = await call(alice, "list_messages", {"conversation_id": conv["id"], "limit": 100})
        assert [m["content"] for m in page["items"]] == [f"alice {i}" for i in range(10)]

    async with Client(_params("root", db, admin=True)) as root:
        owners = sorted(c["owner_id"] for c in (await call(root, "list_conversations"))["items"])
        assert owners == ["alice", "bob"]


async def test_handshake_is_fast(tmp_path: Path) -> None:
    db = tmp_path / "ready.db"
    async with Client(_params("alice", db)) as client:  # creates and migrates the database
        await call(client, "whoami")
    started = time.monotonic()
    async with Client(_params("alice", db)) as client:
        handshake = time.monotonic() - started
        await call(client, "whoami")
    # Desktop clients give up after 10 s (Codex) to 30 s (Claude Code); startup is imports plus one
    # schema check, no per-request migration and nothing else slow.
    assert handshake < 10


async def test_refuses_to_start_without_a_principal(tmp_path: Path) -> None:
    done = await anyio.run_process(
        [sys.executable, "-m", "chatmemory_mcp", "stdio"],
        check=False,
        env={"CHATMEMORY_URL": f"sqlite:///{tmp_path / 'x.db'}", "PATH": ""},
    )
    assert done.returncode == 2
    assert b"CHATMEMORY_PRINCIPAL" in done.stderr
    assert done.stdout == b""
    assert not (tmp_path / "x.db").exists()
