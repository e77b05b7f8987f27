"""``chatmemory-server`` as an operator runs it: tokens made by its own command, JWTs from an issuer,
both checked by the same code as ``chatmemory-mcp http``; no authentication configured, no start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from chatmemory_server.cli import main
from chatmemory_server.tokens import TOKEN_FILE_ENV, TokenFile

from tests.plugins._serving import wait_for_port
from tests.plugins.mcp_server._hosting import bind, port_of
from tests.plugins.mcp_server._issuer import issuing
from tests.plugins.server.conftest import ok


def test_it_refuses_to_start_without_authentication(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--token-file", str(tmp_path / "none.json")]) == 2
    assert "without authentication" in capsys.readouterr().err
    assert main(["--token-file", str(tmp_path / "none.json"), "--jwt-issuer", "https://id.example.com"]) == 2
    assert "--jwt-audience" in capsys.readouterr().err
    key = tmp_path / "key.pem"
    key.write_text("a key")
    jwt = ["--jwt-issuer", "https://id.example.com", "--jwt-audience", "api", "--jwt-public-key", str(key)]
    assert main(["--token-file", str(tmp_path / "none.json"), *jwt, "--jwt-clock-skew", "-5"]) == 2
    assert "clock_skew" in capsys.readouterr().err


def test_a_token_file_named_before_the_token_command_is_the_one_it_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``chatmemory-server --token-file F token create`` writes to F, as the server started with
    ``--token-file F`` reads it; a file named after the subcommand still wins."""
    default = tmp_path / "default.json"
    monkeypatch.setenv(TOKEN_FILE_ENV, str(default))
    chosen, later = tmp_path / "chosen.json", tmp_path / "later.json"
    assert main(["--token-file", str(chosen), "token", "create", "--principal", "alice"]) == 0
    assert (
        main(
            ["--token-file", str(chosen), "token", "create", "--principal", "bob", "--token-file", str(later)]
        )
        == 0
    )
    assert main(["token", "create", "--principal", "carol"]) == 0
    capsys.readouterr()
    owners = {
        path.name: [e.principal for e in TokenFile(path).load().values()] for path in (chosen, later, default)
    }
    assert owners == {"chosen.json": ["alice"], "later.json": ["bob"], "default.json": ["carol"]}
    assert main(["--token-file", str(chosen), "token", "list"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    token_id = line.split("\t")[0]
    assert main(["--token-file", str(chosen), "token", "revoke", token_id]) == 0
    assert TokenFile(chosen).load() == {}


async def test_the_command_serves_token_file_and_jwt_principals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.json"
    assert main(["token", "create", "--principal", "alice", "--token-file", str(tokens)]) == 0
    token = capsys.readouterr().out.strip()
    sock = bind()
    port = port_of(sock)
    sock.close()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {"CHATMEMORY_URL": f"sqlite:///{tmp_path / 'chat.db'}"}
    async with issuing() as issuer:
        command = [
            sys.executable, "-m", "chatmemory_server", "--port", str(port), "--token-file", str(tokens),
            "--jwt-issuer", issuer.url, "--jwt-jwks-url", f"{issuer.url}/jwks", "--public-url", base,
        ]  # fmt: skip
        async with await anyio.open_process(command, env=env) as process:
            try:
                await wait_for_port(port)
                async with httpx.AsyncClient(base_url=base + "/v1", timeout=30) as http:
                    mine = {"Authorization": f"Bearer {token}"}
                    assert ok(await http.get("/me", headers=mine)) == {
                        "id": "alice",
                        "tenant": None,
                        "admin": False,
                    }
                    minted = {"Authorization": f"Bearer {issuer.mint('alice', aud=base)}"}
                    assert ok(await http.get("/me", headers=minted))["tenant"] == issuer.url
                    cid = ok(await http.post("/conversations", headers=mine, json={}), 201)["id"]
                    # The issuer's alice lives in the issuer's namespace: not the token file's alice.
                    assert (await http.get(f"/conversations/{cid}", headers=minted)).status_code == 404
                    other = {"Authorization": f"Bearer {issuer.mint('alice', aud='https://elsewhere')}"}
                    assert (await http.get("/me", headers=other)).status_code == 401
            finally:
                process.terminate()
            with anyio.fail_after(15):
                await process.wait()


def test_a_database_that_cannot_be_opened_stops_it_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.json"
    assert main(["token", "create", "--principal", "alice", "--token-file", str(tokens)]) == 0
    args = ["--port", "0", "--token-file", str(tokens), "--url", "mysql://nobody@localhost/chat"]
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 3


def test_the_server_runs_without_the_mcp_sdk() -> None:
    code = (
        "import sys, chatmemory_server.cli, chatmemory_server.app, chatmemory_server.jwts; "
        "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith(('mcp.', 'chatmemory_mcp'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=True)
    assert done.stdout.decode().strip() == "[]"
