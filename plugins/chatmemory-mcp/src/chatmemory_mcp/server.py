"""Building the MCP server: identity strategy, lifespan-held store, tools, resources, prompts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from chatmemory import ChatMemory, Principal
from chatmemory_mcp.conversation_tools import register_conversation_tools
from chatmemory_mcp.history_tools import register_history_tools
from chatmemory_mcp.identity import AuthKind, ServerState
from chatmemory_mcp.resources import register_prompts, register_resources
from chatmemory_mcp.search_tools import register_search_tools

__all__ = ["INSTRUCTIONS", "build_server"]

INSTRUCTIONS = """\
chatmemory keeps the record of your conversations: a conversation holds histories (one per
run, with the model that drove it), and each history holds its ordered messages.
Record a run: start_history -> append_messages (batches, each message with a `key`) -> finish_history.
Resume: get_context (latest messages within a token budget), or list_messages to page.
Lists are paged: pass `next_cursor` back as `cursor`. Long content is clipped and flagged `truncated`."""


def build_server(
    *,
    principal: Principal | None = None,
    token_verifier: TokenVerifier | None = None,
    auth_settings: AuthSettings | None = None,
    auth: AuthKind = "stdio",
    memory: ChatMemory | None = None,
    url: str | None = None,
) -> MCPServer[ServerState]:
    """The chatmemory MCP server.

    Give either a fixed ``principal`` (stdio, or loopback HTTP without auth) or a
    ``token_verifier`` with ``auth_settings`` (HTTP); never both, so a request without a
    verified token can never act as a default user. The store is ``memory`` when given
    (owned by the caller), else it is opened at ``url`` (default as ``ChatMemory.open``)
    when the server starts, migrating the schema if needed, and closed when it stops.

    Raises:
        ValueError: neither or both of ``principal`` and ``token_verifier``.
    """
    if (principal is None) == (token_verifier is None):
        raise ValueError("give exactly one of principal (fixed identity) or token_verifier (bearer tokens)")
    if (token_verifier is None) != (auth_settings is None):
        raise ValueError("token_verifier and auth_settings go together")

    @asynccontextmanager
    async def lifespan(_: MCPServer[ServerState]) -> AsyncIterator[ServerState]:
        if memory is not None:
            yield ServerState(memory=memory, principal=principal, auth=auth)
            return
        async with ChatMemory.open(url, migrate=True) as opened:
            yield ServerState(memory=opened, principal=principal, auth=auth)

    server: MCPServer[ServerState] = MCPServer(
        "chatmemory",
        instructions=INSTRUCTIONS,
        version=version("chatmemory-mcp"),
        token_verifier=token_verifier,
        auth=auth_settings,
        lifespan=lifespan,
    )
    register_conversation_tools(server)
    register_history_tools(server)
    register_search_tools(server)
    register_resources(server)
    register_prompts(server)
    return server
