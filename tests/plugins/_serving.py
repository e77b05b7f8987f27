"""Serving an ASGI app on a real loopback socket for the duration of a test."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn


def loopback_socket() -> socket.socket:
    """A listening-ready TCP socket on 127.0.0.1 with a free port.

    Its protocol is named: asyncio turns Nagle's algorithm off (``TCP_NODELAY``) only on
    sockets whose ``proto`` is ``IPPROTO_TCP``, and with it on a response written in two parts
    waits for the client's delayed acknowledgement, about 40 ms a request.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving(app: Any, sock: socket.socket, **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` on ``sock`` (``options`` go to ``uvicorn.Config``); yields the base URL.

    The server runs in a task of its own, not a task group, so a fixture may start it in
    its setup and stop it in its teardown.
    """
    config = uvicorn.Config(app, log_config=None, log_level="warning", lifespan="on", **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve([sock]))
    try:
        with anyio.fail_after(30):
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped it
                    raise RuntimeError("the server stopped before it started")
                await anyio.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


async def wait_for_port(port: int) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port`` (a server in another process)."""
    with anyio.fail_after(60):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return
