"""Serving ``build_http_app`` on a loopback socket with the uvicorn configuration the command line uses."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import uvicorn
from chatmemory_mcp import HttpSettings, build_http_app
from chatmemory_mcp.limits import uvicorn_config

from chatmemory import ChatMemory


def bind(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to ``host`` on a free port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def port_of(sock: socket.socket) -> int:
    """The port ``sock`` is bound to."""
    return int(sock.getsockname()[1])


@asynccontextmanager
async def hosting(settings: HttpSettings, memory: ChatMemory, sock: socket.socket) -> AsyncIterator[str]:
    """Serve the app ``settings`` describe on ``sock`` (bound to ``settings.host``); yields its base URL."""
    app = build_http_app(settings, memory=memory)
    server = uvicorn.Server(
        uvicorn_config(app, settings, log_config=None, log_level="warning", lifespan="on")
    )
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve, [sock])
        with anyio.fail_after(30):
            while not server.started:
                await anyio.sleep(0.02)
        try:
            yield f"http://{settings.host}:{port_of(sock)}"
        finally:
            server.should_exit = True
