"""The ``chatmemory-mcp`` command line: tokens are shown once and stored only as hashes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from chatmemory_mcp import TokenFileVerifier, hash_token, principal_from_env
from chatmemory_mcp.cli import main

from chatmemory import Principal


async def test_token_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "conf" / "tokens.json"
    assert main(["token", "create", "--principal", "alice", "--token-file", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert (
        main(
            [
                "token",
                "create",
                "--principal",
                "root",
                "--admin",
                "--tenant",
                "acme",
                "--token-file",
                str(path),
            ]
        )
        == 0
    )
    admin_token = capsys.readouterr().out.strip()

    stored = path.read_text()
    assert token not in stored
    assert admin_token not in stored
    assert hash_token(token) in json.loads(stored)["tokens"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    verifier = TokenFileVerifier(path)
    accepted = await verifier.identify(token)
    assert accepted is not None
    assert (accepted.principal, accepted.method) == (Principal("alice"), "token")
    root = await verifier.identify(admin_token)
    assert root is not None
    assert root.principal == Principal("root", tenant="acme", admin=True)

    assert main(["token", "list", "--token-file", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing
    assert "root tenant=acme admin" in listing
    alice_id = next(line.split("\t")[0] for line in listing.splitlines() if "\talice" in line)

    assert main(["token", "revoke", alice_id, "--token-file", str(path)]) == 0
    assert await verifier.identify(token) is None
    assert await verifier.identify(admin_token) is not None
    assert main(["token", "revoke", alice_id, "--token-file", str(path)]) == 1


def test_token_expiry_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    assert (
        main(["token", "create", "--principal", "alice", "--expires-in-days", "1", "--token-file", str(path)])
        == 0
    )
    entry = next(iter(json.loads(path.read_text())["tokens"].values()))
    assert entry["expires_at"] - entry["created_at"] == 86_400


def test_http_refuses_to_start_without_auth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "none.json")
    assert main(["http", "--token-file", missing]) == 2
    assert "without authentication" in capsys.readouterr().err
    assert main(["http", "--token-file", missing, "--jwt-issuer", "https://id.example.com"]) == 2
    assert "--jwt-audience" in capsys.readouterr().err


def test_the_principal_comes_from_the_environment() -> None:
    assert principal_from_env({}) is None
    assert principal_from_env({"CHATMEMORY_PRINCIPAL": "  "}) is None
    assert principal_from_env({"CHATMEMORY_PRINCIPAL": "alice"}) == Principal("alice")
    env = {"CHATMEMORY_PRINCIPAL": "ops", "CHATMEMORY_TENANT": "acme", "CHATMEMORY_ADMIN": "yes"}
    assert principal_from_env(env) == Principal("ops", tenant="acme", admin=True)
    with pytest.raises(ValueError, match="CHATMEMORY_ADMIN"):
        principal_from_env({"CHATMEMORY_PRINCIPAL": "ops", "CHATMEMORY_ADMIN": "maybe"})
