"""Tools that record and read runs: start_history, finish_history, append_messages, list_messages."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from uuid import UUID

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import JsonValue

from chatmemory import ConflictError, Message
from chatmemory_mcp.conversation_tools import client_info
from chatmemory_mcp.errors import tool_errors
from chatmemory_mcp.identity import ServerContext, ServerState, scope_for
from chatmemory_mcp.message_input import Messages, to_core
from chatmemory_mcp.models import AppendResult, HistoryOut, MessageOut, MessagePage, StoredMessage
from chatmemory_mcp.params import (
    CREATE,
    READ,
    Agent,
    ContentChars,
    ConversationId,
    Cursor,
    Error,
    FinishStatus,
    HistoryId,
    MessageLimit,
    Metadata,
    ModelName,
    NewestFirst,
    OptionalConversationId,
    OptionalHistoryId,
    SystemPrompts,
    Usage,
)

__all__ = ["RESPONSE_CHARS", "register_history_tools", "stamp", "stored"]

RESPONSE_CHARS = 60_000
"""Message content characters one response carries at most; per-message clipping shrinks to fit."""
MIN_CHARS = 200
"""Per-message content never clipped below this, whatever the page size."""


def stamp(
    ctx: ServerContext, metadata: Mapping[str, JsonValue] | None, agent: str | None
) -> dict[str, JsonValue]:
    """A run's metadata with the MCP client (as it introduced itself) and the agent name added."""
    stamped: dict[str, JsonValue] = dict(metadata or {})
    info = client_info(ctx)
    stamped["mcp_client"] = None if info is None else info.model_dump()
    if agent is not None:
        stamped["agent"] = agent
    return stamped


def stored(messages: Sequence[Message], found: Collection[UUID] = ()) -> list[StoredMessage]:
    """Where messages landed; those whose id is in ``found`` were already stored under their key."""
    return [
        StoredMessage(id=str(m.id), seq=m.seq, role=m.role, key=m.key, deduplicated=m.id in found)
        for m in messages
    ]


def register_history_tools(server: MCPServer[ServerState]) -> None:
    """Add the history and message tools to ``server``."""

    @server.tool(annotations=CREATE)
    async def start_history(
        ctx: ServerContext,
        conversation_id: ConversationId,
        model: ModelName,
        agent: Agent = None,
        system_prompts: SystemPrompts = None,
        metadata: Metadata = None,
    ) -> HistoryOut:
        """Begin a run in a conversation; then append_messages, then finish_history (or: record_run)."""
        with tool_errors():
            history = await scope_for(ctx).start_history(
                conversation_id,
                model=model,
                system_prompts=system_prompts,
                metadata=stamp(ctx, metadata, agent),
            )
        return HistoryOut.of(history)

    @server.tool(annotations=CREATE)
    async def finish_history(
        ctx: ServerContext,
        history_id: HistoryId,
        status: FinishStatus = "completed",
        usage: Usage = None,
        error: Error = None,
    ) -> HistoryOut:
        """Close a run. Repeated with the same status, returns the run unchanged."""
        scope = scope_for(ctx)
        with tool_errors():
            try:
                history = await scope.finish_history(history_id, status=status, usage=usage, error=error)
            except ConflictError:
                # A retry after a lost response: the run is already what the caller asked for.
                current = await scope.get_history(history_id, messages=False)
                if current.status != status:
                    raise ToolError(
                        f"history {history_id} is already {current.status}; it cannot become {status}. "
                        "Call start_history to record a new run."
                    ) from None
                history = current
        return HistoryOut.of(history)

    @server.tool(annotations=CREATE)
    async def append_messages(ctx: ServerContext, history_id: HistoryId, messages: Messages) -> AppendResult:
        """Append messages to a running history, all or none. OpenAI chat messages work as they are.

        A re-sent `key` returns the stored message with `deduplicated: true`.
        """
        with tool_errors():
            # Which messages were already stored is what the append found, not a comparison of
            # clocks: another process's clock, or a concurrent call's, may run ahead of ours.
            appended, added = await scope_for(ctx)._append_keyed(history_id, to_core(messages))
        fresh = {id(m) for m in added}  # both lists are alive: their ids are the objects'
        found = {m.id for m in appended if id(m) not in fresh}
        return AppendResult(
            history_id=str(appended[0].history_id),
            conversation_id=str(appended[0].conversation_id),
            messages=stored(appended, found),
        )

    @server.tool(annotations=READ)
    async def list_messages(
        ctx: ServerContext,
        conversation_id: OptionalConversationId = None,
        history_id: OptionalHistoryId = None,
        limit: MessageLimit = 50,
        cursor: Cursor = None,
        newest_first: NewestFirst = False,
        max_chars: ContentChars = 2_000,
    ) -> MessagePage:
        """A page of a conversation's or a history's messages, with tool calls; get_context fits a budget."""
        with tool_errors():
            scope = scope_for(ctx)
            page = await scope.list_messages(
                conversation_id=conversation_id,
                history_id=history_id,
                limit=scope.limits.page_size(limit),
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
