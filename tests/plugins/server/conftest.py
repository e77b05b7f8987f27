"""The API served by uvicorn on a loopback socket over the shared ``memory`` store (both backends),
with a token file holding alice's, bob's and an admin's tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatmemory_server import TokenFile, TokenFileVerifier, create_app

from chatmemory import ChatMemory, Principal
from tests.plugins._serving import loopback_socket, serving

MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class Served:
    """A running API: its base URL and each principal's token."""

    url: str
    tokens: dict[str, str]

    def client(self, who: str | None = "alice", **headers: str) -> httpx.AsyncClient:
        """An HTTP client sending ``who``'s token (none when ``who`` is ``None``)."""
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(who, who)}"
        return httpx.AsyncClient(base_url=self.url + "/v1", headers=headers, timeout=10)

    @property
    def ws_url(self) -> str:
        """The WebSocket base URL of ``/v1``."""
        return self.url.replace("http://", "ws://") + "/v1"


@pytest.fixture
def token_file(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "tokens.json"
    store = TokenFile(path)
    tokens = {
        "alice": store.create(Principal("alice"))[0],
        "bob": store.create(Principal("bob"))[0],
        "root": store.create(Principal("root", admin=True))[0],
    }
    return path, tokens


@pytest.fixture
async def api(memory: ChatMemory, token_file: tuple[Path, dict[str, str]]) -> AsyncIterator[Served]:
    path, tokens = token_file
    app = create_app(memory, verifier=TokenFileVerifier(path), max_body_bytes=MAX_BODY, keepalive=0.2)
    async with serving(app, loopback_socket(), timeout_graceful_shutdown=2) as url:
        yield Served(url, tokens)


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a response that must have ``status``."""
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def error(response: httpx.Response, status: int, kind: str, field: str | None = None) -> dict[str, Any]:
    """The error of a response that must be a typed error ``kind`` with ``status`` (naming ``field``)."""
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["type"] == kind, body
    assert body.get("field") == field, body
    return dict(body)
