"""Tools that find and resume: search_messages and get_context."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import AliasChoices, Field

from chatmemory_mcp.context_fit import fit_context
from chatmemory_mcp.errors import tool_errors
from chatmemory_mcp.identity import ServerContext, ServerState, scope_for
from chatmemory_mcp.models import ContextOut, MessageOut, SearchHit, SearchPage, clip
from chatmemory_mcp.params import (
    READ,
    ConversationId,
    Cursor,
    OptionalConversationId,
    OptionalHistoryId,
    RoleFilter,
    SearchLimit,
)

__all__ = ["CONTEXT_MESSAGES", "HIT_CHARS", "register_search_tools"]

CONTEXT_MESSAGES = 500
"""The most messages get_context considers."""
UNBOUNDED = 10**9
"""Token budget handed to the store: the response budget is applied to what is sent instead."""
HIT_CHARS = 1_000
"""Characters of message content, and of the snippet, each search hit carries."""


def register_search_tools(server: MCPServer[ServerState]) -> None:
    """Add search_messages and get_context to ``server``."""

    @server.tool(annotations=READ)
    async def search_messages(
        ctx: ServerContext,
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=1_000,
                validation_alias=AliasChoices("query", "q", "search", "keywords", "text"),
                description='All words must occur; "a phrase" in quotes; a trailing * for a prefix (hot*).',
            ),
        ],
        conversation_id: OptionalConversationId = None,
        history_id: OptionalHistoryId = None,
        role: RoleFilter = None,
        limit: SearchLimit = 20,
        cursor: Cursor = None,
    ) -> SearchPage:
        """Full-text search over your messages, best first; matches in `snippet` are «marked»."""
        with tool_errors():
            scope = scope_for(ctx)
            page = await scope.search_messages(
                query,
                conversation_id=conversation_id,
                history_id=history_id,
                role=role,
                limit=scope.limits.page_size(limit),
                cursor=cursor,
            )
        items = []
        for hit in page.items:
            snippet, cut = clip(hit.snippet, HIT_CHARS)
            items.append(
                SearchHit(
                    message=MessageOut.of(hit.message, HIT_CHARS),
                    conversation_title=hit.conversation_title,
                    snippet=snippet or "",
                    rank=hit.rank,
                    truncated=cut,
                )
            )
        return SearchPage(
            items=items,
            next_cursor=page.next_cursor,
            has_more=page.has_more,
            truncated=any(h.truncated or h.message.truncated for h in items),
        )

    @server.tool(annotations=READ)
    async def get_context(
        ctx: ServerContext,
        conversation_id: ConversationId,
        max_tokens: Annotated[
            int,
            Field(
                ge=100,
                le=32_000,
                validation_alias=AliasChoices("max_tokens", "token_budget", "budget", "tokens"),
                description="Budget for this whole response, in tokens of ~4 bytes of JSON (100-32000).",
            ),
        ] = 4_000,
        max_messages: Annotated[
            int | None,
            Field(
                ge=1,
                le=CONTEXT_MESSAGES,
                validation_alias=AliasChoices("max_messages", "limit", "last_n"),
                description=f"At most this many of the latest messages (1-{CONTEXT_MESSAGES}).",
            ),
        ] = None,
    ) -> ContextOut:
        """The latest messages of a conversation within a token budget, oldest first: use it to resume.

        An oversized message is clipped (`truncated`); `omitted` counts older ones left out.
        """
        with tool_errors():
            tail = await scope_for(ctx).get_context(
                conversation_id, max_tokens=UNBOUNDED, max_messages=max_messages or CONTEXT_MESSAGES
            )
        return fit_context(conversation_id, tail.messages, max_tokens, tail.omitted)
