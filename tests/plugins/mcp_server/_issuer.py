"""A local OAuth authorization server for tests: keys made here, JWKS and metadata on a loopback socket.

It speaks just enough OAuth for a client to discover it and get a token: authorization
server metadata (RFC 8414), a JWKS, and a ``client_credentials`` token endpoint that binds
the token to the ``resource`` the client names (RFC 8707).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.plugins.mcp_server._serving import loopback_socket, serving


class Issuer:
    """Mints ES256 access tokens for itself as ``iss``; ``url`` is known once it is serving."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.url = ""

    def mint(self, sub: str | None = "alice", *, key: Any = None, **claims: Any) -> str:
        """A token from this issuer; ``None`` values drop a claim, ``key`` signs with another key."""
        body: dict[str, Any] = {"iss": self.url, "sub": sub, "exp": int(time.time()) + 600} | claims
        return jwt.encode(
            {k: v for k, v in body.items() if v is not None},
            key or self.key,
            algorithm="ES256",
            headers={"kid": "test-key"},
        )

    def app(self) -> Starlette:
        """The issuer's HTTP face: metadata, keys and the token endpoint."""
        public = jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)

        async def metadata(_: Request) -> JSONResponse:
            return JSONResponse(
                {
                    "issuer": self.url,
                    "jwks_uri": f"{self.url}/jwks",
                    "token_endpoint": f"{self.url}/token",
                    "grant_types_supported": ["client_credentials"],
                    "response_types_supported": ["code"],
                }
            )

        async def jwks(_: Request) -> JSONResponse:
            return JSONResponse({"keys": [public | {"kid": "test-key", "use": "sig", "alg": "ES256"}]})

        async def token(request: Request) -> JSONResponse:
            form = await request.form()
            if form.get("grant_type") != "client_credentials" or not form.get("resource"):
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            minted = self.mint(str(form["client_id"]), aud=str(form["resource"]), scope=form.get("scope"))
            return JSONResponse({"access_token": minted, "token_type": "Bearer", "expires_in": 600})

        return Starlette(
            routes=[
                Route("/.well-known/oauth-authorization-server", metadata),
                Route("/jwks", jwks),
                Route("/token", token, methods=["POST"]),
            ]
        )


@asynccontextmanager
async def issuing() -> AsyncIterator[Issuer]:
    """An issuer serving on a loopback socket."""
    issuer = Issuer()
    async with serving(issuer.app(), loopback_socket()) as url:
        issuer.url = url
        yield issuer
