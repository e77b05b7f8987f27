"""``python -m benchmarks.mcp_server``: what a client of ``chatmemory-mcp`` waits for and receives.

- cold start: a fresh ``chatmemory-mcp stdio`` process, from spawn to the answer of its
  first ``tools/list`` (the database exists already; MCP clients time out slow servers);
- the size of that ``tools/list`` answer, which every client puts into its model's context;
- ``append_messages`` latency over streamable HTTP (one message per call, token auth, a
  real ``chatmemory-mcp http`` process on loopback), median and 95th percentile.

Every number comes from real processes talking over pipes and sockets, as a client would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STDIO_MESSAGES = [
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]


def cold_start(db: Path) -> tuple[float, float, float, int]:
    """One fresh stdio server: seconds to ``initialize`` and to ``tools/list``, the CPU seconds
    the process spent until then (robust to a busy machine), and the ``tools/list`` answer's bytes.
    """
    env = os.environ | {"CHATMEMORY_PRINCIPAL": "bench", "CHATMEMORY_URL": f"sqlite:///{db}"}
    payload = "".join(json.dumps(m) + "\n" for m in STDIO_MESSAGES).encode()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "chatmemory_mcp", "stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(payload)
        process.stdin.flush()
        initialized = 0.0
        while True:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("the stdio server exited before answering tools/list")
            answer = json.loads(line)
            if answer.get("id") == 1:
                initialized = time.perf_counter() - started
            if answer.get("id") == 2:
                listed = time.perf_counter() - started
                break
    finally:
        process.kill()
        _, _, usage = os.wait4(process.pid, 0)
        process.returncode = -9
    return initialized, listed, usage.ru_utime + usage.ru_stime, len(line.rstrip(b"\n"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the HTTP server exited at start-up")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError("the HTTP server did not start within 60 s")


def _start_http(db: Path, tokens: Path, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {"CHATMEMORY_URL": f"sqlite:///{db}"}
    command = [
        sys.executable,
        "-m",
        "chatmemory_mcp",
        "http",
        "--port",
        str(port),
        "--token-file",
        str(tokens),
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def http_appends(db: Path, directory: Path, calls: int) -> list[float]:
    """Seconds per ``append_messages`` call of one message, over streamable HTTP with a bearer token."""
    import httpx2
    from chatmemory_mcp import TokenFile
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from chatmemory import Principal

    tokens = directory / "tokens.json"
    token, _ = TokenFile(tokens).create(Principal("bench"))
    port = _free_port()
    process = _start_http(db, tokens, port)
    try:
        await _wait_for_port(port, process)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
            async with Client(transport) as client:
                conversation = await _call(client, "start_conversation", {"title": "bench"})
                history = await _call(
                    client, "start_history", {"conversation_id": conversation["id"], "model": "bench-model"}
                )
                samples = []
                for index in range(calls + 5):
                    message = {"role": "user", "content": f"message {index} " + "x" * 200}
                    started = time.perf_counter()
                    await _call(
                        client, "append_messages", {"history_id": history["id"], "messages": [message]}
                    )
                    if index >= 5:  # the first calls warm caches and the session
                        samples.append(time.perf_counter() - started)
                return samples
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _call(client: Any, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content}")
    return dict(result.structured_content)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print a markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mcp_server", description=__doc__)
    parser.add_argument("--starts", type=int, default=7, help="cold starts to time (default 7)")
    parser.add_argument("--appends", type=int, default=200, help="HTTP append calls to time (default 200)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chatmemory-mcp-bench-") as tmp:
        directory = Path(tmp)
        db = directory / "bench.db"
        cold_start(db)  # creates and migrates the database, and warms the OS file cache
        runs = [cold_start(db) for _ in range(args.starts)]
        appends = asyncio.run(http_appends(db, directory, args.appends))
    initialize = [r[0] for r in runs]
    listed = [r[1] for r in runs]
    cpu = [r[2] for r in runs]
    print("| measure (n) | median | min | p95 |\n|---|---|---|---|")
    print(
        f"| stdio cold start to `initialize` ({len(runs)}) | {_percentile(initialize, 0.5) * 1e3:.0f} ms "
        f"| {min(initialize) * 1e3:.0f} ms | {_percentile(initialize, 0.95) * 1e3:.0f} ms |"
    )
    print(
        f"| stdio cold start to first `tools/list` ({len(runs)}) | {_percentile(listed, 0.5) * 1e3:.0f} ms "
        f"| {min(listed) * 1e3:.0f} ms | {_percentile(listed, 0.95) * 1e3:.0f} ms |"
    )
    print(
        f"| stdio CPU time to first `tools/list` ({len(runs)}) | {_percentile(cpu, 0.5) * 1e3:.0f} ms "
        f"| {min(cpu) * 1e3:.0f} ms | {_percentile(cpu, 0.95) * 1e3:.0f} ms |"
    )
    print(f"| `tools/list` answer | {runs[0][3]:,} bytes | | |")
    print(
        f"| HTTP `append_messages`, 1 message ({len(appends)}) | {_percentile(appends, 0.5) * 1e3:.1f} ms "
        f"| {min(appends) * 1e3:.1f} ms | {_percentile(appends, 0.95) * 1e3:.1f} ms |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
