"""The HTTP server's configuration, importable without loading the MCP SDK."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from chatmemory_server.auth_options import ConfigError

from chatmemory import InvalidInputError, Principal

if TYPE_CHECKING:
    from chatmemory_server.jwts import JWTSettings

__all__ = ["ConfigError", "HttpSettings", "principal_from_env"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(kw_only=True)
class HttpSettings:
    """Everything ``chatmemory-mcp http`` is configured with.

    ``resource_url`` is this MCP endpoint's public URL (default: ``public_url`` + ``path``);
    with an ``authorization_server`` (default: the JWT issuer, when it is a URL) the server
    publishes OAuth protected-resource metadata naming both.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    path: str = "/mcp"
    allowed_hosts: list[str] = field(default_factory=list)
    allowed_origins: list[str] = field(default_factory=list)
    token_file: Path | None = None
    jwt: JWTSettings | None = None
    insecure_principal: Principal | None = None
    """Set only with the explicit insecure flag: every request acts as this principal."""
    public_url: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    stateless: bool = False
    tools: Literal["core", "all"] = "all"
    """``core`` exposes only record_run and the reading tools."""
    database_url: str | None = None
    resource_url: str | None = None
    authorization_server: str | None = None
    oauth_scopes: list[str] = field(default_factory=list)
    """Scopes clients should ask the authorization server for, advertised in the metadata."""
    header_timeout: float = 10.0
    """Seconds a connection has to send a request's headers."""
    body_timeout: float = 30.0
    """Seconds a request has to send its whole body once its headers are in."""
    max_connections: int = 100
    """Open connections (and requests in flight) beyond which requests get ``503``."""
    keep_alive_timeout: int = 5
    """Seconds an idle kept-alive connection stays open."""

    @property
    def local_url(self) -> str:
        """The URL the server listens on, as seen from this machine."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def resource(self) -> str | None:
        """The public URL of the MCP endpoint, when it is known."""
        if self.resource_url is not None:
            return self.resource_url
        if self.public_url is not None:
            return self.public_url.rstrip("/") + self.path
        return None

    @property
    def oauth_issuer(self) -> str | None:
        """The authorization server clients get tokens from, when there is one."""
        if self.authorization_server is not None:
            return self.authorization_server
        if self.jwt is not None and self.jwt.issuer.startswith(("https://", "http://")):
            return self.jwt.issuer
        return None


def principal_from_env(environ: Mapping[str, str] | None = None) -> Principal | None:
    """The principal named by ``CHATMEMORY_PRINCIPAL`` (with ``CHATMEMORY_TENANT`` and
    ``CHATMEMORY_ADMIN``), or ``None`` when it is unset.

    Raises:
        InvalidInputError: a variable holds a malformed value.
    """
    env = os.environ if environ is None else environ
    principal_id = env.get("CHATMEMORY_PRINCIPAL", "").strip()
    if not principal_id:
        return None
    flag = env.get("CHATMEMORY_ADMIN", "").strip().lower()
    if flag not in _TRUE | _FALSE:
        raise InvalidInputError("CHATMEMORY_ADMIN", "must be true or false")
    tenant = env.get("CHATMEMORY_TENANT", "").strip() or None
    return Principal(principal_id, tenant=tenant, admin=flag in _TRUE)
