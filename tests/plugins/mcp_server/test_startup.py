"""Start-up loads only what the transport needs: a stdio server never imports HTTP, JWT or OAuth code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import chatmemory_mcp

HTTP_ONLY = {
    "jwt",
    "chatmemory_mcp.jwts",
    "chatmemory_mcp.auth",
    "chatmemory_mcp.http_app",
    "chatmemory_mcp.limits",
    "chatmemory_server.jwts",
    "chatmemory_server.limits",
    "chatmemory_server.app",
}

RUN_STDIO = """
import json, sys
from chatmemory_mcp.cli import main
status = main(["stdio"])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def test_a_stdio_server_runs_without_the_http_and_jwt_code(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'chat.db'}"
    env = os.environ | {"CHATMEMORY_PRINCIPAL": "alice", "CHATMEMORY_URL": database}
    done = subprocess.run(
        [sys.executable, "-c", RUN_STDIO],
        stdin=subprocess.DEVNULL,  # end of input: the server stops at once
        capture_output=True,
        env=env,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert report["status"] == 0
    assert "chatmemory_mcp.server" in report["modules"]
    assert HTTP_ONLY.isdisjoint(report["modules"])


def test_the_package_names_load_on_first_use() -> None:
    assert set(chatmemory_mcp.__all__) <= set(dir(chatmemory_mcp))
    for name in chatmemory_mcp.__all__:
        assert getattr(chatmemory_mcp, name).__name__ == name


def test_the_bearer_identity_needs_no_mcp_or_web_framework() -> None:
    code = (
        "import sys; import chatmemory_mcp.bearer, chatmemory_mcp.tokens, chatmemory_mcp.jwts, "
        "chatmemory_server, chatmemory_server.auth_options; "
        "print(sorted(m for m in ('mcp', 'starlette', 'uvicorn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=True)
    assert done.stdout.decode().strip() == "[]"
