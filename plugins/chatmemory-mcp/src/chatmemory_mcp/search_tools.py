"""Tools that find and resume: search_messages and get_context."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import AliasChoices, Field

from chatmemory import Role
from chatmemory_mcp.errors import tool_errors
from chatmemory_mcp.identity import ServerContext, ServerState, scope_for
from chatmemory_mcp.models import MessageOut, SearchHit, SearchPage, clip
from chatmemory_mcp.params import READ, Cursor, OptionalConversationId, OptionalHistoryId, SearchLimit

__all__ = ["HIT_CHARS", "register_search_tools"]

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
