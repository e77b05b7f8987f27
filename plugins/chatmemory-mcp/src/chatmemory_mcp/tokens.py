"""The token file: SHA-256 hashes of bearer tokens mapped to principals. No token is stored in clear.

```json
{"version": 1, "tokens": {"<sha256 hex>": {"id": "tok_…", "principal": "alice", "tenant": null,
                                          "admin": false, "label": null, "created_at": 1767225600,
                                          "expires_at": null}}}
```
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chatmemory import InvalidInputError, Principal

__all__ = ["TOKEN_FILE_ENV", "TOKEN_PREFIX", "TokenEntry", "TokenFile", "default_token_file", "hash_token"]

TOKEN_FILE_ENV = "CHATMEMORY_MCP_TOKEN_FILE"
TOKEN_PREFIX = "cmt_"


def default_token_file() -> Path:
    """``$CHATMEMORY_MCP_TOKEN_FILE``, else ``mcp-tokens.json`` in the user's config directory."""
    configured = os.environ.get(TOKEN_FILE_ENV)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_config_path

    return user_config_path("chatmemory") / "mcp-tokens.json"


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as stored in the token file."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One stored token: its public id and the principal it stands for."""

    id: str
    principal: str
    tenant: str | None = None
    admin: bool = False
    label: str | None = None
    created_at: int = 0
    expires_at: int | None = None


class TokenFile:
    """Reads and atomically rewrites one token file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, TokenEntry]:
        """Token hash → entry; empty when the file does not exist.

        Raises:
            InvalidInputError: the file is not a token file.
        """
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise InvalidInputError("token_file", f"cannot be read: {type(exc).__name__}") from None
        try:
            return {str(digest): TokenEntry(**entry) for digest, entry in data["tokens"].items()}
        except (KeyError, TypeError, AttributeError):
            raise InvalidInputError("token_file", "is not a chatmemory-mcp token file") from None

    def create(
        self,
        principal: Principal,
        *,
        label: str | None = None,
        expires_in: int | None = None,
    ) -> tuple[str, TokenEntry]:
        """Store a new token for ``principal``; returns the token (shown once) and its entry.

        Raises:
            InvalidInputError: the file is malformed or ``expires_in`` is not positive.
        """
        if expires_in is not None and expires_in <= 0:
            raise InvalidInputError("expires_in", "must be a positive number of seconds")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = int(time.time())
        entry = TokenEntry(
            id="tok_" + secrets.token_hex(6),
            principal=principal.id,
            tenant=principal.tenant,
            admin=principal.admin,
            label=label,
            created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
        )
        entries = self.load()
        entries[hash_token(token)] = entry
        self._save(entries)
        return token, entry

    def revoke(self, token_id: str) -> TokenEntry | None:
        """Remove the token with this id; returns it, or ``None`` when there is none.

        Raises:
            InvalidInputError: the file is malformed.
        """
        entries = self.load()
        for digest, entry in entries.items():
            if entry.id == token_id:
                del entries[digest]
                self._save(entries)
                return entry
        return None

    def _save(self, entries: dict[str, TokenEntry]) -> None:
        body: dict[str, Any] = {"version": 1, "tokens": {d: asdict(e) for d, e in entries.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Write a private temporary file and rename it, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(body, out, indent=2)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
