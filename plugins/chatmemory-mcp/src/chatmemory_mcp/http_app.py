"""The streamable HTTP app: authentication is required unless explicitly waived on loopback."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from starlette.applications import Starlette

from chatmemory import ChatMemory, Principal
from chatmemory_mcp.auth import AnyOfVerifier, JWTSettings, JWTVerifier, TokenFileVerifier
from chatmemory_mcp.server import build_server

__all__ = ["ConfigError", "HttpSettings", "build_http_app", "is_loopback"]

_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


class ConfigError(Exception):
    """The HTTP server is configured in a way it refuses to run with."""


@dataclass(kw_only=True)
class HttpSettings:
    """Everything ``chatmemory-mcp http`` is configured with."""

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
    max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE
    stateless: bool = False
    database_url: str | None = None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_http_app(settings: HttpSettings, *, memory: ChatMemory | None = None) -> Starlette:
    """The ASGI app serving MCP at ``settings.path``.

    Raises:
        ConfigError: no authentication method and no explicit insecure principal, or an
            insecure principal on a non-loopback host, or both at once.
    """
    if settings.max_body_bytes < 1024:
        raise ConfigError("--max-body-bytes must be at least 1024")
    verifier = _verifier(settings)
    if settings.insecure_principal is not None:
        if verifier is not None:
            raise ConfigError("--insecure-no-auth cannot be combined with a token file or JWT settings")
        if not is_loopback(settings.host):
            raise ConfigError("--insecure-no-auth only binds to a loopback host (127.0.0.1, ::1, localhost)")
        server = build_server(
            principal=settings.insecure_principal, auth="insecure", memory=memory, url=settings.database_url
        )
    elif verifier is None:
        raise ConfigError(
            "refusing to start without authentication: create a token with "
            "`chatmemory-mcp token create --principal NAME` (token file), configure "
            "--jwt-issuer/--jwt-audience with --jwt-public-key or --jwt-jwks-url, "
            "or pass --insecure-no-auth on a loopback host"
        )
    else:
        server = build_server(
            token_verifier=verifier,
            auth_settings=_auth_settings(settings),
            auth="token",
            memory=memory,
            url=settings.database_url,
        )
    return server.streamable_http_app(
        streamable_http_path=settings.path,
        stateless_http=settings.stateless,
        max_request_body_size=settings.max_body_bytes,
        transport_security=_transport_security(settings),
        host=settings.host,
    )


def _verifier(settings: HttpSettings) -> TokenVerifier | None:
    verifiers: list[TokenVerifier] = []
    if settings.token_file is not None and settings.token_file.exists():
        verifiers.append(TokenFileVerifier(settings.token_file))
    if settings.jwt is not None:
        verifiers.append(JWTVerifier(settings.jwt))
    if not verifiers:
        return None
    return verifiers[0] if len(verifiers) == 1 else AnyOfVerifier(verifiers)


def _auth_settings(settings: HttpSettings) -> AuthSettings:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    local = f"http://{host}:{settings.port}"
    issuer = settings.jwt.issuer if settings.jwt is not None else None
    if issuer is None or not issuer.startswith(("http://", "https://")):
        issuer = settings.public_url or local
    resource = None
    if settings.public_url is not None:
        resource = settings.public_url.rstrip("/") + settings.path
    # The verifiers check the audience themselves; resource indicators are not required.
    return AuthSettings(
        issuer_url=issuer,
        resource_server_url=resource,
        validate_token_resource=False,
    )


def _transport_security(settings: HttpSettings) -> TransportSecuritySettings | None:
    if not settings.allowed_hosts:
        return None  # the SDK default: loopback Host headers only when bound to loopback
    hosts = [*settings.allowed_hosts, *_LOOPBACK_HOSTS]
    origins = [*settings.allowed_origins, *_LOOPBACK_ORIGINS]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
