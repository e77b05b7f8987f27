"""Bearer authentication for the MCP HTTP app, and its OAuth 2.1 protected-resource face.

``MCPTokenVerifier`` adapts a ``chatmemory_server.bearer`` verifier to the MCP SDK: the
verified principal travels in the ``AccessToken`` under ``PRINCIPAL_CLAIM``.
``RequireBearer`` answers unauthenticated requests with ``401`` and a ``WWW-Authenticate``
header naming the protected-resource metadata (RFC 9728), which ``metadata_routes`` serves,
so that hosted clients discover the authorization server on their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlsplit

from chatmemory_server.bearer import (
    MAX_TOKEN_LENGTH,
    AuthenticationError,
    BearerVerifier,
    CredentialsRefused,
    MissingCredentials,
    bearer_token,
)
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatmemory_mcp.identity import PRINCIPAL_CLAIM, token_principal

__all__ = ["MCPTokenVerifier", "RequireBearer", "metadata_routes", "metadata_url"]

_WELL_KNOWN = "/.well-known/oauth-protected-resource"


class MCPTokenVerifier:
    """The MCP SDK's ``TokenVerifier`` over a bearer verifier."""

    def __init__(self, verifier: BearerVerifier) -> None:
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        """The ``AccessToken`` of an accepted token, carrying its principal; ``None`` when refused."""
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        identity = await self.verifier.identify(token)
        if identity is None or identity.expired:
            return None
        p = identity.principal
        named = token_principal(p.id, tenant=p.tenant, admin=p.admin, method=identity.method)
        claims: dict[str, object] = {PRINCIPAL_CLAIM: named}
        if identity.issuer is not None:
            claims["iss"] = identity.issuer
        return AccessToken(
            token=token,
            client_id=identity.client_id,
            subject=identity.subject,
            scopes=list(identity.scopes),
            expires_at=identity.expires_at,
            claims=claims,
        )


class RequireBearer:
    """Lets authenticated requests through to ``app``; answers the others with ``401``.

    A request without a bearer token is told authentication is required; one whose token was
    refused is told so (``error="invalid_token"``), so a client knows to get a new token
    rather than to add one.
    """

    def __init__(self, app: ASGIApp, *, resource_metadata: str | None, scopes: Sequence[str] = ()) -> None:
        self.app = app
        self.resource_metadata = resource_metadata
        self.scopes = list(scopes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Forward or refuse one request."""
        if isinstance(scope.get("user"), AuthenticatedUser):
            await self.app(scope, receive, send)
            return
        presented = bearer_token(Headers(scope=scope).get("authorization")) is not None
        await self._refuse(CredentialsRefused() if presented else MissingCredentials(), scope, receive, send)

    async def _refuse(self, error: AuthenticationError, scope: Scope, receive: Receive, send: Send) -> None:
        # RFC 6750 §3.1: no error code when the request carried no credentials at all.
        params = []
        code = "invalid_token" if isinstance(error, CredentialsRefused) else "unauthorized"
        if isinstance(error, CredentialsRefused):
            params += ['error="invalid_token"', f'error_description="{error}"']
        if self.resource_metadata is not None:
            params.append(f'resource_metadata="{self.resource_metadata}"')
        if self.scopes:
            params.append(f'scope="{" ".join(self.scopes)}"')
        challenge = "Bearer " + ", ".join(params) if params else 'Bearer realm="chatmemory"'
        body = json.dumps({"error": code, "error_description": str(error)})
        response = Response(
            body, status_code=401, media_type="application/json", headers={"WWW-Authenticate": challenge}
        )
        await response(scope, receive, send)


def metadata_url(resource_url: str) -> str:
    """Where RFC 9728 puts the metadata of ``resource_url``: the well-known path before the resource path."""
    parts = urlsplit(resource_url)
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{_WELL_KNOWN}{path}"


def metadata_routes(
    *, resource_url: str, authorization_servers: list[str], scopes: list[str] | None = None
) -> list[Route]:
    """The protected-resource metadata, at the RFC 9728 path for ``resource_url`` and at the bare path.

    Hosted clients probe the path variant first (``/.well-known/oauth-protected-resource/mcp``)
    and fall back to the bare one; both answer the same document. It is public, so any origin
    may read it.
    """
    document: dict[str, object] = {
        "resource": resource_url,
        "authorization_servers": authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "chatmemory",
    }
    if scopes:
        document["scopes_supported"] = scopes
    cors = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, OPTIONS"}

    async def metadata(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=cors | {"Access-Control-Allow-Headers": "*"})
        return JSONResponse(document, headers=cors | {"Cache-Control": "public, max-age=3600"})

    paths = dict.fromkeys([urlsplit(metadata_url(resource_url)).path, _WELL_KNOWN])
    return [Route(path, metadata, methods=["GET", "OPTIONS"]) for path in paths]
