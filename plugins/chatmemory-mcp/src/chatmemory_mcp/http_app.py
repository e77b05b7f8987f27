"""The streamable HTTP app: authentication is required unless explicitly waived on loopback."""

from __future__ import annotations

import ipaddress

from chatmemory_server.bearer import AnyOfVerifier, BearerVerifier
from chatmemory_server.tokens import TokenFileVerifier
from mcp.server.auth.middleware.bearer_auth import RequireAuthMiddleware
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from chatmemory import ChatMemory
from chatmemory_mcp.auth import MCPTokenVerifier, RequireBearer, metadata_routes, metadata_url
from chatmemory_mcp.limits import BodyDeadline
from chatmemory_mcp.server import build_server
from chatmemory_mcp.settings import ConfigError, HttpSettings

__all__ = ["ConfigError", "HttpSettings", "build_http_app", "is_loopback"]

_LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
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
            insecure principal on a non-loopback host, or both at once, or a bad limit.
    """
    _check_limits(settings)
    verifier = _verifier(settings)
    if settings.insecure_principal is not None:
        if verifier is not None:
            raise ConfigError("--insecure-no-auth cannot be combined with a token file or JWT settings")
        if not is_loopback(settings.host):
            raise ConfigError("--insecure-no-auth only binds to a loopback host (127.0.0.1, ::1, localhost)")
        server = build_server(
            principal=settings.insecure_principal,
            auth="insecure",
            memory=memory,
            url=settings.database_url,
            tools=settings.tools,
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
            token_verifier=MCPTokenVerifier(verifier),
            auth_settings=AuthSettings(
                issuer_url=settings.oauth_issuer or settings.public_url or settings.local_url,
                resource_server_url=None,  # the metadata routes below are ours
                validate_token_resource=False,  # the JWT verifier checks the audience itself
            ),
            auth="token",
            memory=memory,
            url=settings.database_url,
            tools=settings.tools,
        )
    app = server.streamable_http_app(
        streamable_http_path=settings.path,
        stateless_http=settings.stateless,
        max_request_body_size=settings.max_body_bytes,
        transport_security=_transport_security(settings),
        host=settings.host,
    )
    _guard_endpoint(app, settings, authenticated=verifier is not None)
    return app


def _check_limits(settings: HttpSettings) -> None:
    if settings.max_body_bytes < 1024:
        raise ConfigError("--max-body-bytes must be at least 1024")
    for name, value in [
        ("--header-timeout", settings.header_timeout),
        ("--body-timeout", settings.body_timeout),
        ("--max-connections", settings.max_connections),
        ("--keep-alive-timeout", settings.keep_alive_timeout),
    ]:
        if value <= 0:
            raise ConfigError(f"{name} must be positive")


def _verifier(settings: HttpSettings) -> BearerVerifier | None:
    verifiers: list[BearerVerifier] = []
    if settings.token_file is not None and settings.token_file.exists():
        verifiers.append(TokenFileVerifier(settings.token_file))
    if settings.jwt is not None:
        from chatmemory_server.jwts import JWTVerifier

        verifiers.append(JWTVerifier(settings.jwt))
    if not verifiers:
        return None
    return verifiers[0] if len(verifiers) == 1 else AnyOfVerifier(verifiers)


def _guard_endpoint(app: Starlette, settings: HttpSettings, *, authenticated: bool) -> None:
    """Put the body deadline and our 401 answers around the SDK's MCP endpoint; add the metadata routes."""
    index, route = next(
        (i, r) for i, r in enumerate(app.router.routes) if isinstance(r, Route) and r.path == settings.path
    )
    endpoint: ASGIApp = route.endpoint
    if isinstance(endpoint, RequireAuthMiddleware):
        endpoint = endpoint.app
    guarded: ASGIApp = BodyDeadline(
        endpoint, seconds=settings.body_timeout, max_bytes=settings.max_body_bytes
    )
    issuer = settings.oauth_issuer
    if authenticated:
        resource_metadata = None
        if issuer is not None:
            resource = settings.resource or settings.local_url + settings.path
            routes = metadata_routes(
                resource_url=resource, authorization_servers=[issuer], scopes=settings.oauth_scopes
            )
            app.router.routes.extend(routes)
            resource_metadata = metadata_url(resource)
        guarded = RequireBearer(guarded, resource_metadata=resource_metadata, scopes=settings.oauth_scopes)
    app.router.routes[index] = Route(settings.path, endpoint=guarded)


def _transport_security(settings: HttpSettings) -> TransportSecuritySettings | None:
    """Host and Origin checks against DNS rebinding.

    With ``--allowed-host``, only those hosts (and loopback names) are served. Without it, a
    server bound to any loopback address (all of 127.0.0.0/8 and ``::1``) serves loopback
    names only, whatever the SDK's own default covers.
    """
    if settings.allowed_hosts:
        names = [*settings.allowed_hosts, *_LOOPBACK_HOSTS]
    elif is_loopback(settings.host):
        bound = f"[{settings.host.strip('[]')}]" if ":" in settings.host else settings.host
        names = list(dict.fromkeys([*_LOOPBACK_HOSTS, bound]))
    else:
        return None  # a non-loopback bind without allowed hosts: bearer tokens are the protection
    hosts = [pattern for name in names for pattern in (name, f"{name}:*")]
    origins = [*settings.allowed_origins]
    for name in names:
        origins += [f"{scheme}://{name}{port}" for scheme in ("http", "https") for port in ("", ":*")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
