"""Tools that record and read runs: start_history, finish_history, append_messages, list_messages."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import AliasChoices, Field, JsonValue

from chatmemory_mcp.conversation_tools import client_info
from chatmemory_mcp.errors import tool_errors
from chatmemory_mcp.identity import ServerContext, ServerState, scope_for
from chatmemory_mcp.models import AppendResult, HistoryOut, MessageIn, MessageOut, MessagePage, StoredMessage
from chatmemory_mcp.params import (
    CREATE,
    READ,
    ContentChars,
    ConversationId,
    Cursor,
    HistoryId,
    MessageLimit,
    OptionalConversationId,
    OptionalHistoryId,
)

__all__ = ["RESPONSE_CHARS", "register_history_tools"]

RESPONSE_CHARS = 60_000
"""Message content characters one response carries at most; per-message clipping shrinks to fit."""
MIN_CHARS = 200
"""Per-message content never clipped below this, whatever the page size."""


def register_history_tools(server: MCPServer[ServerState]) -> None:
    """Add the history and message tools to ``server``."""

    @server.tool(annotations=CREATE)
    async def start_history(
        ctx: ServerContext,
        conversation_id: ConversationId,
        model: Annotated[
            str,
            Field(
                min_length=1,
                max_length=200,
                validation_alias=AliasChoices("model", "model_name", "llm"),
                description="The model driving this run, e.g. 'claude-sonnet-4-5' or 'gpt-4.1'.",
            ),
        ],
        agent: Annotated[
            str | None, Field(max_length=200, validation_alias=AliasChoices("agent", "agent_name"))
        ] = None,
        system_prompts: Annotated[list[str] | None, Field(max_length=20)] = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> HistoryOut:
        """Begin recording one run (one agent turn or task) in a conversation.

        Then call append_messages with the run's messages, and finish_history at the end.
        The MCP client's name and version are recorded with the run.
        """
        stamped = dict(metadata or {})
        info = client_info(ctx)
        stamped["mcp_client"] = None if info is None else info.model_dump()
        if agent is not None:
            stamped["agent"] = agent
        with tool_errors():
            history = await scope_for(ctx).start_history(
                conversation_id, model=model, system_prompts=system_prompts, metadata=stamped
            )
        return HistoryOut.of(history)

    @server.tool(annotations=CREATE)
    async def finish_history(
        ctx: ServerContext,
        history_id: HistoryId,
        status: Literal["completed", "failed", "cancelled"] = "completed",
        usage: Annotated[
            dict[str, JsonValue] | None,
            Field(description="Token counts and cost, e.g. {'input_tokens': 812}."),
        ] = None,
        error: Annotated[
            str | None, Field(max_length=10_000, description="What went wrong, for failed runs.")
        ] = None,
    ) -> HistoryOut:
        """Close a run. Nothing more can be appended to it afterwards."""
        with tool_errors():
            history = await scope_for(ctx).finish_history(history_id, status=status, usage=usage, error=error)
        return HistoryOut.of(history)

    @server.tool(annotations=CREATE)
    async def append_messages(
        ctx: ServerContext,
        history_id: HistoryId,
        messages: Annotated[list[MessageIn], Field(min_length=1, max_length=100)],
    ) -> AppendResult:
        """Append 1-100 messages to a running history, all or none, in order.

        Give each message a `key` (unique in the history): re-sending a key after a timeout
        returns the stored message instead of adding a duplicate.
        """
        with tool_errors():
            stored = await scope_for(ctx).append_messages(history_id, [m.as_core() for m in messages])
        return AppendResult(
            history_id=str(stored[0].history_id),
            conversation_id=str(stored[0].conversation_id),
            messages=[StoredMessage(id=str(m.id), seq=m.seq, role=m.role, key=m.key) for m in stored],
        )

    @server.tool(annotations=READ)
    async def list_messages(
        ctx: ServerContext,
        conversation_id: OptionalConversationId = None,
        history_id: OptionalHistoryId = None,
        limit: MessageLimit = 50,
        cursor: Cursor = None,
        newest_first: bool = False,
        max_chars: ContentChars = 2_000,
    ) -> MessagePage:
        """A page of a conversation's (or one history's) messages in order; give one of the two ids.

        Use newest_first=true to read the tail. For a token-budgeted view, use get_context.
        """
        with tool_errors():
            page = await scope_for(ctx).list_messages(
                conversation_id=conversation_id,
                history_id=history_id,
                limit=limit,
                cursor=cursor,
                newest_first=newest_first,
            )
        per_message = min(max_chars, max(MIN_CHARS, RESPONSE_CHARS // max(1, len(page.items))))
        items = [MessageOut.of(m, per_message) for m in page.items]
        return MessagePage(
            items=items,
            next_cursor=page.next_cursor,
            has_more=page.has_more,
            truncated=any(m.truncated for m in items),
        )
