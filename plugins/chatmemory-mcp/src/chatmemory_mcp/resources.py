"""Resources (a conversation as JSON, a bounded markdown transcript) and prompts."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel

from chatmemory import Message
from chatmemory_mcp.errors import resource_errors
from chatmemory_mcp.identity import ServerContext, ServerState, scope_for
from chatmemory_mcp.models import ContextMessage, ConversationOut, HistoryOut

__all__ = ["TRANSCRIPT_CHARS", "TRANSCRIPT_MESSAGES", "register_prompts", "register_resources"]

RESOURCE_HISTORIES = 50
"""Histories listed in the conversation resource; the rest are counted, not listed."""
TRANSCRIPT_MESSAGES = 100
"""The transcript resource shows at most this many of the latest messages."""
TRANSCRIPT_CHARS = 2_000
"""Characters of each message the transcript shows."""


class ConversationResource(BaseModel):
    """The JSON body of ``chatmemory://conversations/{id}``."""

    conversation: ConversationOut
    histories: list[HistoryOut]
    histories_omitted: int


def register_resources(server: MCPServer[ServerState]) -> None:
    """Add the resource templates to ``server``."""

    @server.resource(
        "chatmemory://conversations/{conversation_id}",
        name="conversation",
        description="A conversation with its first histories (runs), as JSON.",
        mime_type="application/json",
    )
    async def conversation(conversation_id: str, ctx: ServerContext) -> str:
        with resource_errors():
            detail = await scope_for(ctx).get_conversation(conversation_id)
        body = ConversationResource(
            conversation=ConversationOut.of(detail),
            histories=[HistoryOut.of(h) for h in detail.histories[:RESOURCE_HISTORIES]],
            histories_omitted=max(0, len(detail.histories) - RESOURCE_HISTORIES),
        )
        return body.model_dump_json(exclude_none=True, exclude_defaults=True)

    @server.resource(
        "chatmemory://conversations/{conversation_id}/transcript",
        name="transcript",
        description=f"The latest {TRANSCRIPT_MESSAGES} messages of a conversation as markdown, clipped.",
        mime_type="text/markdown",
    )
    async def transcript(conversation_id: str, ctx: ServerContext) -> str:
        with resource_errors():
            scope = scope_for(ctx)
            detail = await scope.get_conversation(conversation_id)
            page = await scope.list_messages(
                conversation_id=conversation_id,
                limit=scope.limits.page_size(TRANSCRIPT_MESSAGES),
                newest_first=True,
            )
        return render_transcript(detail.title, list(reversed(page.items)), detail.message_count)


def render_transcript(title: str | None, messages: list[Message], total: int) -> str:
    """Markdown for ``messages`` (in order), noting how many older ones are left out."""
    lines = [f"# {title or 'Untitled conversation'}", ""]
    omitted = max(0, total - len(messages))
    if omitted:
        lines += [f"_{omitted} older messages not shown; read them with list_messages._", ""]
    for message in messages:
        view = ContextMessage.of(message, TRANSCRIPT_CHARS)
        who = f"{message.role} ({message.model})" if message.model else message.role
        if view.tool_call_id:
            who += f" → `{view.tool_call_id}`" + (" (error)" if view.is_error else "")
        lines += [f"**{who}** · #{message.seq}", ""]
        if view.content:
            lines += [view.content, ""]
        for call in view.tool_calls or ():
            lines += [f"_calls_ `{call.name}({call.arguments})` · `{call.id}`", ""]
        if view.truncated:
            lines += ["_[clipped]_", ""]
    return "\n".join(lines)


def register_prompts(server: MCPServer[ServerState]) -> None:
    """Add the prompts to ``server``."""

    @server.prompt()
    def record_this_run(conversation_id: str | None = None, model: str | None = None) -> str:
        """How to record the current run in chatmemory."""
        where = (
            f"conversation {conversation_id}"
            if conversation_id
            else "a new conversation (call start_conversation first)"
        )
        driver = model or "<the model you are running as>"
        return (
            f"Record this run in chatmemory, in {where}:\n"
            f"1. Call start_history(conversation_id=..., model={driver!r}, agent=<your agent name>). "
            "Keep the returned history id.\n"
            "2. As the run progresses, call append_messages(history_id=..., messages=[...]) with the user, "
            "assistant and tool messages in order, in batches of up to 100. Give every message a `key` "
            "unique in the run (e.g. 'turn-3-assistant'), so a retried call never stores it twice.\n"
            "3. At the end call finish_history(history_id=..., status='completed' or 'failed', usage=...). "
            "A finished history is closed; start a new one for the next run.\n"
            "Once a run is over, record_run(model=..., messages=[...], status=...) records it in one call."
        )

    @server.prompt()
    def resume_conversation(conversation_id: str) -> str:
        """How to pick up a conversation where it left off."""
        return (
            f"Resume chatmemory conversation {conversation_id}:\n"
            f"1. Call get_context(conversation_id={conversation_id!r}) for its latest messages within a "
            "token budget (it tells you how many older messages were left out; page through them with "
            "list_messages if you need them).\n"
            "2. Continue from the last message. To record what you do next, call start_history in this "
            "conversation, then append_messages, then finish_history."
        )
