"""Who a request runs as: a bearer token's principal (HTTP) or the one fixed at start (stdio).

Identity never comes from tool arguments, URLs or headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from chatmemory_server.bearer import ADMIN_SCOPE
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from chatmemory import ChatMemory, Principal
from chatmemory.scope import Scope
from chatmemory_mcp.settings import principal_from_env

__all__ = [
    "ADMIN_SCOPE",
    "PRINCIPAL_CLAIM",
    "AuthKind",
    "ServerContext",
    "ServerState",
    "principal_from_env",
    "principal_of",
    "scope_for",
    "token_principal",
]

PRINCIPAL_CLAIM = "chatmemory_principal"
"""Claim our token verifiers add to an ``AccessToken``: ``{"id", "tenant", "admin", "method"}``."""

AuthKind = Literal["stdio", "token", "jwt", "insecure"]
ServerContext = Context[Any, Any]


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the lifespan holds: the store, and the fixed principal when there is one.

    An HTTP server with token authentication never has a fixed principal, so a request
    without a verified token can never fall through to a default user.
    """

    memory: ChatMemory
    principal: Principal | None
    auth: AuthKind


def token_principal(
    subject: str, *, tenant: str | None, admin: bool, method: Literal["token", "jwt"]
) -> dict[str, Any]:
    """The ``PRINCIPAL_CLAIM`` value a token verifier attaches to the tokens it accepts."""
    return {"id": subject, "tenant": tenant, "admin": admin, "method": method}


def principal_of(state: ServerState) -> tuple[Principal, AuthKind]:
    """The principal of the current request, and how it was established.

    Raises:
        ToolError: no principal (fail closed).
    """
    token = get_access_token()
    if token is not None:
        return _from_token(token)
    if state.principal is not None:
        return state.principal, state.auth
    raise ToolError("not authenticated: this server needs a bearer token")


def scope_for(ctx: ServerContext) -> Scope:
    """The store as seen by the current request's principal.

    Raises:
        ToolError: no principal.
    """
    state: ServerState = ctx.request_context.lifespan_context
    principal, _ = principal_of(state)
    return state.memory.scoped(principal)


def _from_token(token: AccessToken) -> tuple[Principal, AuthKind]:
    claim = (token.claims or {}).get(PRINCIPAL_CLAIM)
    if not isinstance(claim, Mapping):
        raise ToolError("not authenticated: the token does not name a principal")
    method: AuthKind = "jwt" if claim.get("method") == "jwt" else "token"
    return Principal(str(claim["id"]), tenant=claim.get("tenant"), admin=bool(claim.get("admin"))), method
