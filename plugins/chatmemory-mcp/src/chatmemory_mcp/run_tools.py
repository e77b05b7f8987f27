"""Whole-run and whole-object tools: record_run, delete_message, delete_history, export_conversation."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic_core import to_json

from chatmemory_mcp.errors import tool_errors
from chatmemory_mcp.history_tools import stamp, stored
from chatmemory_mcp.identity import ServerContext, ServerState, scope_for
from chatmemory_mcp.message_input import Messages, to_core
from chatmemory_mcp.models import Deleted, ExportOut, HistoryOut, RunOut
from chatmemory_mcp.params import (
    CREATE,
    DESTROY,
    READ,
    Agent,
    ConversationId,
    Error,
    FinishStatus,
    HistoryId,
    MessageId,
    Metadata,
    ModelName,
    OptionalConversationId,
    SystemPrompts,
    Title,
    Usage,
)

__all__ = ["EXPORT_BYTES", "EXPORT_MESSAGES", "register_run_tools"]

EXPORT_MESSAGES = 2_000
"""Messages a conversation may hold to be exported over MCP."""
EXPORT_BYTES = 500_000
"""Bytes an export document may take in one response."""


def register_run_tools(server: MCPServer[ServerState]) -> None:
    """Add record_run, the deletes and export_conversation to ``server``."""

    @server.tool(annotations=CREATE)
    async def record_run(
        ctx: ServerContext,
        model: ModelName,
        messages: Messages,
        conversation_id: OptionalConversationId = None,
        title: Title = None,
        status: FinishStatus = "completed",
        usage: Usage = None,
        error: Error = None,
        agent: Agent = None,
        system_prompts: SystemPrompts = None,
        metadata: Metadata = None,
    ) -> RunOut:
        """Record a finished run, all or nothing; re-sent into its conversation with keys, stored once."""
        with tool_errors():
            run = await scope_for(ctx).record_run(
                conversation_id,
                model=model,
                messages=to_core(messages),
                status=status,
                title=title,
                usage=usage,
                error=error,
                system_prompts=system_prompts,
                metadata=stamp(ctx, metadata, agent),
                once=True,
            )
        return RunOut(
            conversation_id=str(run.conversation_id),
            new_conversation=run.created,
            history=HistoryOut.of(run.history),
            messages=stored(run.messages, {m.id for m in run.messages} if run.resent else ()),
        )

    @server.tool(annotations=DESTROY)
    async def delete_message(ctx: ServerContext, message_id: MessageId) -> Deleted:
        """Soft-delete a message (the operator purges it later)."""
        with tool_errors():
            await scope_for(ctx).delete_message(message_id)
        return Deleted(id=message_id, deleted=True)

    @server.tool(annotations=DESTROY)
    async def delete_history(ctx: ServerContext, history_id: HistoryId) -> Deleted:
        """Soft-delete a run and its messages (the operator purges them later)."""
        with tool_errors():
            await scope_for(ctx).delete_history(history_id)
        return Deleted(id=history_id, deleted=True)

    @server.tool(annotations=READ)
    async def export_conversation(ctx: ServerContext, conversation_id: ConversationId) -> ExportOut:
        """A whole conversation as one JSON document for `chatmemory import`; up to 2000 messages, 500 KB."""
        scope = scope_for(ctx)
        with tool_errors():
            detail = await scope.get_conversation(conversation_id)
            if detail.message_count > EXPORT_MESSAGES:
                raise _too_large(conversation_id, f"{detail.message_count} messages")
            document = await scope.export_conversation(conversation_id)
        size = len(to_json(document))
        if size > EXPORT_BYTES:
            raise _too_large(conversation_id, f"{size} bytes")
        return ExportOut(conversation_id=conversation_id, bytes=size, document=document)


def _too_large(conversation_id: str, size: str) -> ToolError:
    return ToolError(
        f"conversation {conversation_id} is too large to export here ({size}; the limits are "
        f"{EXPORT_MESSAGES} messages and {EXPORT_BYTES} bytes). Page it with list_messages, or run "
        "`chatmemory export` on the server."
    )
