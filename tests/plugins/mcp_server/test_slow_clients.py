"""Slow and idle connections cannot hold the HTTP server: header and body deadlines, a connection cap.

Each test speaks raw HTTP/1.1 over a socket to a real server, as a trickling client would.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from chatmemory_mcp import ConfigError, HttpSettings, TokenFile, build_http_app

from chatmemory import ChatMemory, Principal
from tests.plugins.mcp_server._hosting import bind, hosting, port_of
from tests.plugins.mcp_server._serving import http_client
from tests.plugins.mcp_server.conftest import call

DEADLINE = 0.6


@asynccontextmanager
async def served(store: ChatMemory, tmp_path: Path, **limits: float) -> AsyncIterator[tuple[int, str]]:
    token, _ = TokenFile(tmp_path / "tokens.json").create(Principal("alice"))
    sock = bind()
    settings = HttpSettings(port=port_of(sock), token_file=tmp_path / "tokens.json", **limits)  # type: ignore[arg-type]
    async with hosting(settings, store, sock):
        yield port_of(sock), token


async def _closed_within(stream: anyio.abc.ByteStream, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    received = b""
    with anyio.fail_after(seconds):
        try:
            while True:
                received += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            pass
    return received, time.monotonic() - started


async def test_headers_trickling_in_are_cut_off(store: ChatMemory, tmp_path: Path) -> None:
    async with served(store, tmp_path, header_timeout=DEADLINE) as (port, _):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")

            async def trickle() -> None:
                try:
                    for _ in range(100):
                        await stream.send(b"X")
                        await anyio.sleep(0.05)
                except (anyio.BrokenResourceError, OSError):
                    pass

            async with anyio.create_task_group() as group:
                group.start_soon(trickle)
                _, took = await _closed_within(stream, 5)
                group.cancel_scope.cancel()
        assert took < DEADLINE + 2


async def test_a_kept_alive_connection_cannot_trickle_its_next_request(
    store: ChatMemory, tmp_path: Path
) -> None:
    async with served(store, tmp_path, header_timeout=DEADLINE, keep_alive_timeout=30) as (port, _):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /.well-known/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert b"404" in await stream.receive()
            await stream.send(b"GET /mcp HTTP/1.1\r\n")  # and nothing more
            _, took = await _closed_within(stream, 5)
        assert took < DEADLINE + 2


async def test_a_body_that_never_completes_gets_408(store: ChatMemory, tmp_path: Path) -> None:
    async with served(store, tmp_path, body_timeout=DEADLINE) as (port, token):
        head = (
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nAuthorization: Bearer {token}\r\n"
            "Content-Length: 1000\r\n\r\n"
        )
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(head.encode() + b'{"jsonrpc": "2.0", ')
            received, took = await _closed_within(stream, 5)
        assert received.startswith(b"HTTP/1.1 408")
        assert took < DEADLINE + 2
        async with http_client(f"http://127.0.0.1:{port}", token) as alice:  # the server is fine
            assert (await call(alice, "whoami"))["principal_id"] == "alice"


async def test_connections_beyond_the_cap_get_503_until_idle_ones_are_dropped(
    store: ChatMemory, tmp_path: Path
) -> None:
    async with served(store, tmp_path, max_connections=3, header_timeout=DEADLINE) as (port, token):
        # The probe shows the cap only if it is answered before the idle connections' header
        # deadline (counted from after ``opened``) could drop them; a machine that stalled for
        # that long shows nothing, and the connections are opened again.
        for _ in range(5):
            opened = time.monotonic()
            idle = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(2)]
            try:
                async with await anyio.connect_tcp("127.0.0.1", port) as probe:
                    await probe.send(b"GET /.well-known/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    answer = await probe.receive()
                in_time = time.monotonic() - opened < DEADLINE
                if in_time:
                    assert answer.startswith(b"HTTP/1.1 503")
                for stream in idle:  # the header deadline frees their slots
                    await _closed_within(stream, 5)
            finally:
                for stream in idle:
                    await stream.aclose()
            if in_time:
                break
        else:
            pytest.fail(f"never answered within {DEADLINE} s of opening the connections")
        async with http_client(f"http://127.0.0.1:{port}", token) as alice:
            assert (await call(alice, "whoami"))["principal_id"] == "alice"


@pytest.mark.parametrize("limit", ["header_timeout", "body_timeout", "max_connections", "keep_alive_timeout"])
def test_limits_must_be_positive(tmp_path: Path, limit: str) -> None:
    TokenFile(tmp_path / "tokens.json").create(Principal("alice"))
    with pytest.raises(ConfigError, match="must be positive"):
        build_http_app(HttpSettings(token_file=tmp_path / "tokens.json", **{limit: 0}))  # type: ignore[arg-type]
