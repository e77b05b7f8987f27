"""The change streams through real clients: Server-Sent Events (httpx + httpx-sse) and a WebSocket
(websockets), live, resumed from a cursor without loss or repeats, ended when access is lost,
and isolated between principals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from chatmemory_server import TokenFile, TokenFileVerifier, bearer, create_app, streams
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from chatmemory import ChatMemory, NewMessage, Principal
from chatmemory.scope import Scope
from tests.plugins._serving import loopback_socket, serving
from tests.plugins.server.conftest import Served, error

WAIT = 10.0


@asynccontextmanager
async def sse(
    http: httpx.AsyncClient, path: str, **headers: str
) -> AsyncIterator[tuple[EventSource, AsyncIterator[ServerSentEvent]]]:
    async with aconnect_sse(http, "GET", path, headers=headers) as source:
        source.response.raise_for_status()
        yield source, _without_keepalives(source.aiter_sse())


async def _without_keepalives(events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
    """The stream's events. Once an event carried an id, httpx-sse hands each keep-alive comment
    over as an event without data (it keeps the id for the next event, as the SSE spec says, and
    then dispatches): on a busy machine one came between two changes a test waited for. The
    server never sends an event without data."""
    async for event in events:
        if event.data:
            yield event


async def take(events: AsyncIterator[ServerSentEvent], n: int) -> list[ServerSentEvent]:
    """The next ``n`` events."""
    return [await asyncio.wait_for(anext(events), WAIT) for _ in range(n)]


async def frames(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    """The next ``n`` JSON frames."""
    return [json.loads(await asyncio.wait_for(ws.recv(), WAIT)) for _ in range(n)]


async def _run(chat: Scope) -> tuple[str, str]:
    conv = await chat.start_conversation(title="Live")
    run = await chat.start_history(conv.id, model="m")
    return str(conv.id), str(run.id)


async def _all(events: AsyncIterator[ServerSentEvent]) -> list[ServerSentEvent]:
    """Every event until the stream ends."""
    return [e async for e in events]


def _kinds(events: list[ServerSentEvent]) -> list[str]:
    return [json.loads(e.data)["kind"] for e in events]


async def test_sse_delivers_changes_live_and_resumes_after_the_last_event_id(
    api: Served, memory: ChatMemory
) -> None:
    alice = memory.scoped(Principal("alice"))
    cid, hid = await _run(alice)
    async with api.client() as http:
        async with sse(http, f"/conversations/{cid}/events") as (_, events):
            (ready,) = await take(events, 1)
            assert ready.event == "ready" and ready.id
            user, pending = await alice.append_messages(
                hid, [NewMessage("user", "Hi"), NewMessage("assistant", "", status="pending")]
            )
            await alice.complete_message(pending.id, content="Hello!")
            seen = await take(events, 3)
            assert _kinds(seen) == ["message.appended", "message.appended", "message.completed"]
            assert [e.id for e in seen] == [json.loads(e.data)["cursor"] for e in seen]
            done = json.loads(seen[2].data)
            assert (done["message_id"], done["message"]["content"]) == (str(pending.id), "Hello!")
            assert json.loads(seen[0].data)["message"]["id"] == str(user.id)

        # Changes while disconnected, then a reconnect from the second event: nothing lost, nothing twice.
        await alice.update_conversation(cid, title="Renamed")
        await alice.finish_history(hid)
        async with sse(http, f"/conversations/{cid}/events", **{"Last-Event-ID": seen[1].id}) as (_, again):
            ready, *resumed = await take(again, 4)
            assert ready.event == "ready" and not ready.id  # resuming: the client's last id stands
            assert _kinds(resumed) == ["message.completed", "conversation.updated", "history.finished"]
        async with sse(http, f"/conversations/{cid}/events?after={seen[2].id}") as (_, again):
            assert _kinds((await take(again, 3))[1:]) == ["conversation.updated", "history.finished"]

        error(await http.get(f"/conversations/{cid}/events", headers={"Last-Event-ID": "junk"}), 422,
              "InvalidInputError", "after")  # fmt: skip


async def test_sse_keeps_idle_streams_alive_and_ends_when_the_conversation_goes(
    api: Served, memory: ChatMemory
) -> None:
    alice = memory.scoped(Principal("alice"))
    cid, _ = await _run(alice)
    async with api.client() as http, http.stream("GET", f"/conversations/{cid}/events") as response:
        lines = response.aiter_lines()
        assert [await anext(lines) for _ in range(5)][3:] == ["", ": keep-alive"]  # idle 0.2 s
        await alice.delete_conversation(cid)
        rest = [line async for line in lines]
    assert "event: error" in rest
    ended = json.loads(rest[rest.index("event: error") + 1].removeprefix("data: "))
    assert ended["error"]["type"] == "ConversationNotFound"
    assert any('"kind":"conversation.deleted"' in line for line in rest)


async def test_websocket_delivers_and_resumes_with_after(api: Served, memory: ChatMemory) -> None:
    alice = memory.scoped(Principal("alice"))
    cid, hid = await _run(alice)
    headers = {"Authorization": f"Bearer {api.tokens['alice']}"}
    async with connect(f"{api.ws_url}/conversations/{cid}/events", additional_headers=headers) as ws:
        (ready,) = await frames(ws, 1)
        assert ready["type"] == "ready" and ready["cursor"]
        stored = await alice.append_messages(hid, [NewMessage("user", "one"), NewMessage("user", "two")])
        first = await frames(ws, 2)
        assert [f["event"]["message_id"] for f in first] == [str(m.id) for m in stored]
    await alice.append_messages(hid, [NewMessage("user", "three")])
    after = first[0]["event"]["cursor"]
    # As a browser sends it: the token as the second subprotocol, after "bearer".
    offered = [Subprotocol("bearer"), Subprotocol(api.tokens["alice"])]
    async with connect(f"{api.ws_url}/conversations/{cid}/events?after={after}", subprotocols=offered) as ws:
        assert ws.subprotocol == "bearer"
        ready, *resumed = await frames(ws, 3)
        assert ready == {"type": "ready", "cursor": None}
        assert [f["event"]["message"]["content"] for f in resumed] == ["two", "three"]
        await alice.delete_conversation(cid)
        gone = await frames(ws, 2)
        assert gone[0]["event"]["kind"] == "conversation.deleted"
        assert gone[1]["error"]["type"] == "ConversationNotFound"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


async def test_websocket_refusals_are_http_answers(api: Served, memory: ChatMemory) -> None:
    cid, _ = await _run(memory.scoped(Principal("alice")))
    for who, path, status in [
        (None, "/events", 401),
        ("cmt_nope", "/events", 401),
        ("bob", f"/conversations/{cid}/events", 404),
        ("alice", f"/conversations/{cid}/events?after=junk", 422),
    ]:
        headers = {} if who is None else {"Authorization": f"Bearer {api.tokens.get(who, who)}"}
        with pytest.raises(InvalidStatus) as refused:
            async with connect(api.ws_url + path, additional_headers=headers):
                pass
        assert refused.value.response.status_code == status, (who, path)
        if status == 401:
            assert refused.value.response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_sidebar_streams_show_only_the_callers_conversations(api: Served, memory: ChatMemory) -> None:
    alice, bob = memory.scoped(Principal("alice")), memory.scoped(Principal("bob"))
    bob_headers = {"Authorization": f"Bearer {api.tokens['bob']}"}
    async with (
        api.client() as http,
        sse(http, "/events") as (_, alice_events),
        connect(f"{api.ws_url}/events", additional_headers=bob_headers) as bob_ws,
    ):
        await take(alice_events, 1)
        await frames(bob_ws, 1)
        theirs = await bob.start_conversation(title="Bob's")
        mine = await alice.start_conversation(title="Alice's")
        await bob.update_conversation(theirs.id, pinned=True)
        await alice.update_conversation(mine.id, archived=True)
        seen = [json.loads(e.data) for e in await take(alice_events, 2)]
        assert [(e["kind"], e["conversation_id"]) for e in seen] == [
            ("conversation.created", str(mine.id)),
            ("conversation.updated", str(mine.id)),
        ]
        bobs = [f["event"] for f in await frames(bob_ws, 2)]
        assert [(e["kind"], e["conversation_id"]) for e in bobs] == [
            ("conversation.created", str(theirs.id)),
            ("conversation.updated", str(theirs.id)),
        ]
        # One more change each way, so a leaked event would arrive before it.
        await alice.delete_conversation(mine.id)
        assert [json.loads(e.data)["kind"] for e in await take(alice_events, 1)] == ["conversation.deleted"]
        await bob.delete_conversation(theirs.id)
        assert (await frames(bob_ws, 1))[0]["event"]["kind"] == "conversation.deleted"


async def test_a_resume_gets_what_a_deleted_conversation_still_owes(api: Served, memory: ChatMemory) -> None:
    """Disconnected while the conversation was deleted: the reconnect still gets the deletion,
    then the stream ends; the same cursor on someone else's or a missing id is a 404."""
    alice = memory.scoped(Principal("alice"))
    cid, hid = await _run(alice)
    cursor = await alice.change_cursor(cid)
    await alice.append_messages(hid, [NewMessage("user", "last words")])
    await alice.delete_conversation(cid)
    async with api.client() as http:
        async with sse(http, f"/conversations/{cid}/events", **{"Last-Event-ID": cursor}) as (_, events):
            ready, *owed = await take(events, 4)
            assert ready.event == "ready"
            assert [e.event for e in owed] == ["message", "message", "error"]
            assert _kinds(owed[:2]) == ["message.appended", "conversation.deleted"]
            assert json.loads(owed[2].data)["error"]["type"] == "ConversationNotFound"
        async with api.client("bob") as bob:
            refused = await bob.get(f"/conversations/{cid}/events", headers={"Last-Event-ID": cursor})
            error(refused, 404, "ConversationNotFound")
        missing = await http.get(f"/conversations/{hid}/events", headers={"Last-Event-ID": cursor})
        error(missing, 404, "ConversationNotFound")


async def test_a_stream_ends_when_its_token_expires_or_is_revoked(
    api: Served, memory: ChatMemory, token_file: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream answers to its token for as long as it runs: an expired one (SSE) or a revoked
    one (WebSocket) ends it, and nothing written afterwards reaches it."""
    path, _ = token_file
    alice = memory.scoped(Principal("alice"))
    # The stream starts (its token checked) however long that takes on a busy machine; then the
    # server's clock moves past the token's expiry.
    short, expiring = TokenFile(path).create(Principal("alice"), expires_in=60)
    async with (
        httpx.AsyncClient(base_url=api.url + "/v1", headers={"Authorization": f"Bearer {short}"}) as http,
        sse(http, "/events") as (_, events),
    ):
        (ready,) = await take(events, 1)
        assert ready.event == "ready"
        assert expiring.expires_at is not None
        ahead = expiring.expires_at + 1 - time.time()
        moved = SimpleNamespace(time=lambda: time.time() + ahead, monotonic=time.monotonic)
        monkeypatch.setattr(bearer, "time", moved)
        monkeypatch.setattr(streams, "time", moved)
        await alice.start_conversation(title="after expiry")
        rest = await asyncio.wait_for(_all(events), WAIT)
    assert [e.event for e in rest if e.event != "ready"][-1:] == ["error"]
    assert json.loads(rest[-1].data)["error"]["type"] == "InvalidToken"
    assert not any('"after expiry"' in e.data for e in rest)

    revocable, entry = TokenFile(path).create(Principal("alice"))
    headers = {"Authorization": f"Bearer {revocable}"}
    async with connect(f"{api.ws_url}/events", additional_headers=headers) as ws:
        (ready,) = await frames(ws, 1)
        assert ready["type"] == "ready"
        TokenFile(path).revoke(entry.id)
        (refused,) = await frames(ws, 1)
        assert refused["type"] == "error" and refused["error"]["type"] == "InvalidToken"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_stream_ends_when_its_token_comes_to_stand_for_someone_else(
    api: Served, memory: ChatMemory, token_file: tuple[Path, dict[str, str]]
) -> None:
    """A token whose entry is changed while a stream runs (its admin right taken away, here by
    editing the token file) ends the stream when the token is checked again: the stream never
    goes on showing what its old principal could see."""
    path, _ = token_file
    token, entry = TokenFile(path).create(Principal("ops", admin=True))
    bob = memory.scoped(Principal("bob"))
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=api.url + "/v1", headers=headers) as http,
        sse(http, "/events") as (_, events),
        connect(f"{api.ws_url}/events", additional_headers=headers) as ws,
    ):
        await take(events, 1)
        await frames(ws, 1)
        document = json.loads(path.read_text())
        for stored in document["tokens"].values():
            if stored["id"] == entry.id:
                stored["admin"] = False
        path.write_text(json.dumps(document))
        await asyncio.sleep(0.5)  # past the stream's next check (keep-alive 0.2 s)
        await bob.start_conversation(title="bob's, after the demotion")
        rest = await asyncio.wait_for(_all(events), WAIT)
        (refused,) = await frames(ws, 1)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert not any("after the demotion" in e.data for e in rest)
    assert [e.event for e in rest] == ["error"]
    assert json.loads(rest[0].data)["error"]["type"] == "InvalidToken"
    assert refused["type"] == "error" and refused["error"]["type"] == "InvalidToken"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_revoked_tokens_stream_ends_within_a_keepalive_interval_even_after_an_event(
    memory: ChatMemory, token_file: tuple[Path, dict[str, str]]
) -> None:
    """The token is verified again at least every keep-alive interval, however events and idle
    waits fall: a change delivered just before a check is due must not put off the check by
    another whole interval (the stream of a revoked token went on for nearly two)."""
    path, _ = token_file
    alice = memory.scoped(Principal("alice"))
    cid, hid = await _run(alice)
    app = create_app(memory, verifier=TokenFileVerifier(path), keepalive=KEEPALIVE)
    token, entry = TokenFile(path).create(Principal("alice"))
    async with serving(app, loopback_socket(), timeout_graceful_shutdown=2) as url:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(base_url=url + "/v1", headers=headers, timeout=WAIT) as http,
            sse(http, f"/conversations/{cid}/events") as (_, events),
        ):
            opened = time.monotonic()  # the token was verified as the stream opened, just before
            await take(events, 1)
            TokenFile(path).revoke(entry.id)
            revoked = time.monotonic()
            # A change just before the next check is due: handed out (within the interval).
            await asyncio.sleep(max(0.0, opened + 0.8 * KEEPALIVE - time.monotonic()))
            await alice.append_messages(hid, [NewMessage("user", "just before the check")])
            rest = await asyncio.wait_for(_all(events), 3 * KEEPALIVE)
            ended = time.monotonic()
    assert [e.event for e in rest][-1] == "error"
    assert json.loads(rest[-1].data)["error"]["type"] == "InvalidToken"
    assert ended - revoked < 1.45 * KEEPALIVE, ended - revoked  # was nearly 2 * KEEPALIVE


KEEPALIVE = 2.0
