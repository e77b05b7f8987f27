"""The token file: SHA-256 hashes of bearer tokens mapped to principals. No token is stored in clear.

One file serves both ``chatmemory-server`` and ``chatmemory-mcp http``: a token works with either.

```json
{"version": 1, "tokens": {"<sha256 hex>": {"id": "tok_…", "principal": "alice", "tenant": null,
                                          "admin": false, "label": null, "created_at": 1767225600,
                                          "expires_at": null}}}
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from chatmemory import ChatMemoryError, InvalidInputError, Principal
from chatmemory_server.bearer import ADMIN_SCOPE, Identity

__all__ = [
    "TOKEN_FILE_ENV",
    "TOKEN_PREFIX",
    "TokenEntry",
    "TokenFile",
    "TokenFileVerifier",
    "default_token_file",
    "hash_token",
]

logger = logging.getLogger("chatmemory_server")

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

    @classmethod
    def from_json(cls, raw: object) -> TokenEntry:
        """An entry read from the file, every field of exactly its type.

        A string ``"false"`` is not a bool and a float is not a timestamp: anything but the
        exact JSON type is refused, so a hand-edited file cannot grant more than it says.

        Raises:
            InvalidInputError: a field is missing, unknown or of the wrong type.
        """
        if not isinstance(raw, dict):
            raise InvalidInputError("token_file", "an entry is not an object")
        unknown = set(raw) - _ENTRY_FIELDS
        if unknown:
            raise InvalidInputError("token_file", f"unknown entry field {sorted(unknown)[0]!r}")
        for name, accepted in _ENTRY_TYPES.items():
            value = raw.get(name, _MISSING)
            if value is _MISSING and name in _REQUIRED:
                raise InvalidInputError("token_file", f"an entry has no {name!r}")
            # bool is an int in Python; JSON true must never stand for a timestamp, nor 1 for true.
            if value is not _MISSING and (type(value) not in accepted):
                raise InvalidInputError("token_file", f"an entry's {name!r} has the wrong type")
        entry = cls(**raw)
        try:
            principal = entry.principal_of()
        except InvalidInputError as exc:
            raise InvalidInputError("token_file", f"an entry names an invalid principal ({exc})") from None
        if principal.tenant is not None and "://" in principal.tenant:
            raise InvalidInputError("token_file", "a tenant may not contain '://' (reserved for JWT issuers)")
        return entry

    def principal_of(self) -> Principal:
        """The principal this token stands for.

        Raises:
            InvalidInputError: the principal or tenant is not a valid name.
        """
        return Principal(self.principal, tenant=self.tenant, admin=self.admin)


_MISSING = object()
_REQUIRED = {"id", "principal"}
_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "principal": (str,),
    "tenant": (str, type(None)),
    "admin": (bool,),
    "label": (str, type(None)),
    "created_at": (int,),
    "expires_at": (int, type(None)),
}
_ENTRY_FIELDS = {f.name for f in fields(TokenEntry)}


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
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, dict):
            raise InvalidInputError("token_file", "is not a chatmemory token file")
        return {str(digest): TokenEntry.from_json(entry) for digest, entry in tokens.items()}

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
        if principal.tenant is not None and "://" in principal.tenant:
            raise InvalidInputError("tenant", "may not contain '://' (reserved for JWT issuers)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        # Whole seconds, rounded up: an expiring token lives at least ``expires_in`` seconds,
        # and expires exactly ``expires_in`` after its recorded creation.
        now = math.ceil(time.time())
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


class TokenFileVerifier:
    """Accepts the tokens whose SHA-256 is in the token file.

    The file is re-read when it changes, so ``chatmemory-server token revoke`` (or
    ``chatmemory-mcp token revoke``) takes effect on the next request without a restart. A
    file that cannot be read, or that holds one malformed entry, refuses every token until it
    is fixed.
    """

    def __init__(self, path: Path) -> None:
        self._file = TokenFile(path)
        self._seen: tuple[int, int, int] | None = None
        self._entries: dict[str, TokenEntry] = {}

    async def identify(self, token: str) -> Identity | None:
        """The principal of ``token``, or ``None`` when it is unknown, revoked or expired."""
        entry = self._current().get(hash_token(token))
        if entry is None:
            return None
        identity = Identity(
            principal=entry.principal_of(),
            method="token",
            subject=entry.principal,
            client_id=entry.id,
            scopes=("chatmemory", *((ADMIN_SCOPE,) if entry.admin else ())),
            expires_at=entry.expires_at,
        )
        return None if identity.expired else identity

    def _current(self) -> dict[str, TokenEntry]:
        try:
            stat = os.stat(self._file.path)
        except FileNotFoundError:
            self._seen, self._entries = None, {}
            return self._entries
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            try:
                self._entries = self._file.load()
            except ChatMemoryError as exc:
                logger.error("token file %s refused (%s); refusing every token", self._file.path, exc)
                self._entries = {}
            self._seen = seen
        return self._entries
