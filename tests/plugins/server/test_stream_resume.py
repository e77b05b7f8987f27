"""Streams resumed the way a chat UI resumes them after a dropped connection: often nothing
happened while it was away, and the stream must open at once and stay live."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chatmemory_server import TokenFileVerifier, create_app
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatmemory import ChatMemory, NewMessage, Principal, _changes
from tests.plugins._serving import loopback_socket, serving
from tests.plugins.server.conftest import Served
from tests.plugins.server.test_streams import WAIT, _run, frames, sse, take


async def test_a_resume_with_nothing_missed_opens_at_once_and_stays_live(
    api: Served, memory: ChatMemory
) -> None:
    alice = memory.scoped(Principal("alice"))
    cid, hid = await _run(alice)
    cursor = await alice.change_cursor(cid)
    async with api.client() as http:
        for path in (f"/conversations/{cid}/events", "/events"):
            async with asyncio.timeout(WAIT):
                async with sse(http, path, **{"Last-Event-ID": cursor}) as (_, events):
                    (ready,) = await take(events, 1)
                    assert ready.event == "ready"
                    (stored,) = await alice.append_messages(hid, [NewMessage("user", path)])
                    (change,) = await take(events, 1)
                    assert json.loads(change.data)["message_id"] == str(stored.id)
            cursor = change.id
    headers = {"Authorization": f"Bearer {api.tokens['alice']}"}
    async with asyncio.timeout(WAIT):
        url = f"{api.ws_url}/conversations/{cid}/events?after={cursor}"
        async with connect(url, additional_headers=headers) as ws:
            assert (await frames(ws, 1))[0]["type"] == "ready"
            (stored,) = await alice.append_messages(hid, [NewMessage("user", "ws")])
            assert (await frames(ws, 1))[0]["event"]["message_id"] == str(stored.id)


async def _watchers_gone(memory: ChatMemory) -> None:
    """Wait until the store has no watcher left (the server let go of every stream's watch)."""
    hub = memory._db.changes
    async with asyncio.timeout(WAIT):
        while True:
            with hub._lock:
                if not hub._waiters:
                    return
            await asyncio.sleep(0.02)


async def test_clients_that_leave_mid_stream_leave_no_watch_behind(api: Served, memory: ChatMemory) -> None:
    alice = memory.scoped(Principal("alice"))
    cid, hid = await _run(alice)
    cursor = await alice.change_cursor(cid)
    headers = {"Authorization": f"Bearer {api.tokens['alice']}"}
    async with api.client() as http:
        for path, resume in [(f"/conversations/{cid}/events", {}), ("/events", {"Last-Event-ID": cursor})]:
            async with sse(http, path, **resume) as (_, events):
                await take(events, 1)
                await alice.append_messages(hid, [NewMessage("user", "seen as the client leaves")])
        async with connect(f"{api.ws_url}/events?after={cursor}", additional_headers=headers) as ws:
            await frames(ws, 1)
            await alice.append_messages(hid, [NewMessage("user", "unread")])
    await _watchers_gone(memory)


async def test_closing_the_store_ends_open_streams_promptly(
    db_url: str, token_file: tuple[Path, dict[str, str]]
) -> None:
    """An app serving a store its owner closes (shutting down) ends every open stream with an
    error event or close code at once, rather than leaving clients hanging."""
    path, tokens = token_file
    memory = await ChatMemory.open(db_url)
    try:
        app = create_app(memory, verifier=TokenFileVerifier(path), keepalive=30)
        async with serving(app, loopback_socket(), timeout_graceful_shutdown=2) as url:
            served = Served(url, tokens)
            headers = {"Authorization": f"Bearer {tokens['alice']}"}
            async with (
                served.client() as http,
                sse(http, "/events") as (_, events),
                connect(f"{served.ws_url}/events", additional_headers=headers) as ws,
            ):
                await take(events, 1)
                await frames(ws, 1)
                await asyncio.wait_for(memory.close(), WAIT)
                async with asyncio.timeout(WAIT):
                    rest = [e async for e in events]
                    (ended,) = await frames(ws, 1)
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.recv()
            assert [json.loads(e.data)["error"]["type"] for e in rest] == ["StorageError"]
            assert ended["error"]["type"] == "StorageError"
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    finally:
        await memory.close()


async def test_a_resume_from_a_cursor_the_store_never_gave_ends_with_a_typed_error(
    api: Served, memory: ChatMemory
) -> None:
    """A cursor kept from another database (or made up) would silently skip changes; the stream
    says so with an ``InvalidInputError`` naming ``after`` and ends."""
    alice = memory.scoped(Principal("alice"))
    cid, _ = await _run(alice)
    store = await alice._store()
    position, _, _ = _changes.parse_cursor(await alice.change_cursor())
    elsewhere = _changes.cursor(position + 1000, 0, store)
    async with api.client() as http:
        for path in (f"/conversations/{cid}/events", "/events"):
            async with asyncio.timeout(WAIT), sse(http, path, **{"Last-Event-ID": elsewhere}) as (_, events):
                ready, *rest = [e async for e in events]
            assert ready.event == "ready"
            assert [(e.event, json.loads(e.data)["error"]["field"]) for e in rest] == [("error", "after")]


async def test_a_head_request_answers_at_once_and_leaves_no_watch(api: Served, memory: ChatMemory) -> None:
    """``HEAD`` on a stream path (a link checker, a monitoring probe) gets the stream's headers
    and an end, refusals as for ``GET``; no watch is left running, and the client's connection
    serves its next request."""
    cid, _ = await _run(memory.scoped(Principal("alice")))
    async with api.client() as http, asyncio.timeout(WAIT):
        for path in ("/events", f"/conversations/{cid}/events"):
            head = await http.head(path)
            assert head.status_code == 200
            assert head.headers["content-type"].startswith("text/event-stream")
            assert (await http.get("/me")).status_code == 200  # the same connection, free again
        junk = await http.head(f"/conversations/{cid}/events", headers={"Last-Event-ID": "junk"})
        assert junk.status_code == 422
    async with api.client("bob") as http, asyncio.timeout(WAIT):
        assert (await http.head(f"/conversations/{cid}/events")).status_code == 404
    await _watchers_gone(memory)


async def test_a_sidebar_resume_from_before_a_purge_ends_with_a_typed_error(
    api: Served, memory: ChatMemory
) -> None:
    """The client saw a conversation start, then went away while it was deleted and purged:
    its sidebar stream says ``after`` is too old (reload) instead of never telling it."""
    alice, root = memory.scoped(Principal("alice")), memory.scoped(Principal("root", admin=True))
    gone, _ = await _run(alice)
    shown = await alice.change_cursor()
    await alice.delete_conversation(gone)
    await root.purge_deleted(deleted_before=datetime.now(UTC) + timedelta(seconds=1))
    async with (
        api.client() as http,
        asyncio.timeout(WAIT),
        sse(http, "/events", **{"Last-Event-ID": shown}) as (_, events),
    ):
        ready, *rest = [e async for e in events]
    assert ready.event == "ready"
    assert [(e.event, json.loads(e.data)["error"]["field"]) for e in rest] == [("error", "after")]
    # A browser's EventSource reconnects on its own, with the last id it got: the error's, the
    # cursor of then, from which the stream goes on (not the refused cursor, again and again).
    (refused,) = rest
    assert refused.id
    later, _ = await _run(alice)
    async with (
        api.client() as http,
        asyncio.timeout(WAIT),
        sse(http, "/events", **{"Last-Event-ID": refused.id}) as (_, events),
    ):
        ready, started = await take(events, 2)
    assert (ready.event, started.event) == ("ready", "message")
    assert json.loads(started.data)["conversation_id"] == later


async def test_a_resume_from_another_databases_cursor_behind_this_head_ends_with_a_typed_error(
    api: Served, memory: ChatMemory, tmp_path: Path
) -> None:
    """A client kept its last id from another server's database (staging, a database moved or
    rebuilt) with fewer changes than this one: the stream must say ``after`` cannot be resumed
    from, not replay this database's changes from that position as if they followed it."""
    async with ChatMemory.open(f"sqlite:///{tmp_path}/elsewhere.db", migrate=True) as other:
        elsewhere = other.scoped(Principal("alice"))
        await elsewhere.start_conversation(title="elsewhere")
        kept = await elsewhere.change_cursor()
    alice = memory.scoped(Principal("alice"))
    for n in range(3):
        await _run(alice)
        await alice.start_conversation(title=f"here {n}")
    async with (
        api.client() as http,
        asyncio.timeout(WAIT),
        sse(http, "/events", **{"Last-Event-ID": kept}) as (_, events),
    ):
        ready, first = await take(events, 2)
    assert ready.event == "ready"
    assert (first.event, json.loads(first.data)["error"]["field"]) == ("error", "after")
