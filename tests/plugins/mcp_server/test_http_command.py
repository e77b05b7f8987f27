"""``chatmemory-mcp http`` as an operator runs it: a real process, OAuth options, connection limits."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio
import httpx2

from tests.plugins._serving import wait_for_port
from tests.plugins.mcp_server._hosting import bind, port_of
from tests.plugins.mcp_server._issuer import issuing
from tests.plugins.mcp_server._serving import http_client
from tests.plugins.mcp_server.conftest import call


async def test_the_command_serves_a_protected_resource_with_deadlines(tmp_path: Path) -> None:
    sock = bind()
    port = port_of(sock)
    sock.close()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "CHATMEMORY_URL": f"sqlite:///{tmp_path / 'chat.db'}",
        "CHATMEMORY_MCP_TOKEN_FILE": str(tmp_path / "no-tokens.json"),
    }
    async with issuing() as issuer:
        command = [
            sys.executable, "-m", "chatmemory_mcp", "http", "--port", str(port),
            "--public-url", base, "--jwt-issuer", issuer.url, "--jwt-jwks-url", f"{issuer.url}/jwks",
            "--oauth-scope", "chatmemory", "--oauth-scope", "offline_access",
            "--header-timeout", "0.5", "--body-timeout", "5", "--max-connections", "20",
        ]  # fmt: skip
        async with await anyio.open_process(command, env=env) as process:
            try:
                await wait_for_port(port)
                async with httpx2.AsyncClient(timeout=30) as http:
                    document = (await http.get(f"{base}/.well-known/oauth-protected-resource/mcp")).json()
                assert document["resource"] == f"{base}/mcp"  # and the audience tokens must name
                assert document["authorization_servers"] == [issuer.url]
                assert document["scopes_supported"] == ["chatmemory", "offline_access"]
                async with http_client(base, issuer.mint("alice", aud=f"{base}/mcp")) as alice:
                    assert (await call(alice, "whoami"))["principal_id"] == "alice"

                started = time.monotonic()
                async with await anyio.connect_tcp("127.0.0.1", port) as slow:
                    await slow.send(b"POST /mcp HTTP/1.1\r\n")
                    with anyio.fail_after(5):
                        try:
                            while await slow.receive():
                                pass
                        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                            pass
                assert time.monotonic() - started < 3
            finally:
                process.terminate()
