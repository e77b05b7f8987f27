"""Tools that find and resume: search_messages and get_context."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import AliasChoices, Field

from chatmemory import Role
from chatmemory_mcp.errors import tool_errors
from chatmemory_mcp.identity import ServerContext, ServerState, scope_for
from chatmemory_mcp.models import ContextOut, MessageOut, SearchHit, SearchPage, clip
from chatmemory_mcp.params import (
    READ,
    ConversationId,
    Cursor,
    OptionalConversationId,
    OptionalHistoryId,
    SearchLimit,
)

__all__ = ["HIT_CHARS", "register_search_tools"]

CHARS_PER_TOKEN = 4
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
        role: Role | None = None,
        limit: SearchLimit = 20,
        cursor: Cursor = None,
    ) -> SearchPage:
        """Full-text search over your messages, most relevant first; matches in the snippet are «marked»."""
        with tool_errors():
            page = await scope_for(ctx).search_messages(
                query,
                conversation_id=conversation_id,
                history_id=history_id,
                role=role,
                limit=limit,
                cursor=cursor,
            )
        items = []
        for hit in page.items:
            snippet, cut = clip(hit.snippet, HIT_CHARS)
            items.append(
                SearchHit(
                    message=MessageOut.of(hit.message, HIT_CHARS),
                    conversation_id=str(hit.conversation_id),
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
                description="Token budget for the messages (estimated, 100-32000).",
            ),
        ] = 4_000,
        max_messages: Annotated[
            int | None,
            Field(ge=1, le=500, validation_alias=AliasChoices("max_messages", "limit", "last_n")),
        ] = None,
    ) -> ContextOut:
        """The latest messages of a conversation that fit a token budget, oldest first: use it to resume.

        Tool calls and their results are kept or left out together. `omitted` counts the older
        messages left out.
        """
        with tool_errors():
            context = await scope_for(ctx).get_context(
                conversation_id, max_tokens=max_tokens, max_messages=max_messages
            )
        # The budget bounds the size already; the clip only guards against estimate drift.
        cap = max_tokens * CHARS_PER_TOKEN
        return ContextOut(
            conversation_id=conversation_id,
            messages=[MessageOut.of(m, cap) for m in context.messages],
            omitted=context.omitted,
            estimated_tokens=context.estimated_tokens,
        )
