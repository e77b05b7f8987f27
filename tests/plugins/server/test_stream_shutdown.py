"""A server shutting down with event streams open (a deploy, a restart): it ends them cleanly
at once, and the clients resume from their last cursor wherever they reconnect."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest
import uvicorn
from chatmemory_server import TokenFileVerifier, create_app
from chatmemory_server.cli import stream_ending_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatmemory import ChatMemory, NewMessage, Principal
from tests.plugins._serving import loopback_socket, serving
from tests.plugins.server.conftest import Served
from tests.plugins.server.test_streams import WAIT, _run, frames, sse, take


async def test_a_server_shutting_down_ends_open_streams_cleanly_at_once(
    db_url: str, memory: ChatMemory, token_file: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    path, tokens = token_file
    alice = memory.scoped(Principal("alice"))
    cid, hid = await _run(alice)
    # The app opens the store itself, as ``chatmemory-server`` does: it closes it once every
    # connection is over, so the streams must end first.
    app = create_app(db_url, verifier=TokenFileVerifier(path), keepalive=30)
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=20)
    server = stream_ending_server(config, app)
    sock = loopback_socket()
    running = asyncio.create_task(server.serve([sock]))
    async with asyncio.timeout(WAIT):
        while not server.started:
            await asyncio.sleep(0.02)
    served = Served(f"http://127.0.0.1:{sock.getsockname()[1]}", tokens)
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    with caplog.at_level(logging.ERROR):
        async with (
            served.client() as http,
            sse(http, f"/conversations/{cid}/events") as (_, events),
            connect(f"{served.ws_url}/events", additional_headers=headers) as ws,
        ):
            await take(events, 1)
            await frames(ws, 1)
            (stored,) = await alice.append_messages(hid, [NewMessage("user", "before the restart")])
            (seen,) = await take(events, 1)
            await frames(ws, 1)
            began = time.monotonic()
            server.should_exit = True
            async with asyncio.timeout(WAIT):
                rest = [e async for e in events]  # the body ends (no incomplete chunked read)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                await running
            assert time.monotonic() - began < 5  # not the graceful timeout (20 s)
    assert rest == []
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # What was missed meanwhile comes with the resume from the last id, on the next server.
    (missed,) = await alice.append_messages(hid, [NewMessage("user", "during the restart")])
    again = create_app(memory, verifier=TokenFileVerifier(path), keepalive=30)
    async with serving(again, loopback_socket(), timeout_graceful_shutdown=2) as url:
        resume = {"Last-Event-ID": seen.id}
        async with (
            Served(url, tokens).client() as http,
            sse(http, f"/conversations/{cid}/events", **resume) as (_, events),
        ):
            ready, change = await take(events, 2)
    assert ready.event == "ready"
    assert json.loads(seen.data)["message_id"] == str(stored.id)
    assert json.loads(change.data)["message_id"] == str(missed.id)
