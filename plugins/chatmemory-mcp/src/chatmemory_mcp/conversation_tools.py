"""Tools on conversations: whoami, start, list, get, update, delete."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field, JsonValue

from chatmemory import HistoryDetail, InvalidInputError
from chatmemory_mcp.errors import tool_errors
from chatmemory_mcp.identity import ServerContext, ServerState, principal_of, scope_for
from chatmemory_mcp.models import (
    ClientInfo,
    ConversationDetailOut,
    ConversationOut,
    ConversationPage,
    Deleted,
    HistoryOut,
    WhoAmI,
)
from chatmemory_mcp.params import (
    CREATE,
    DESTROY,
    READ,
    UPDATE,
    ConversationId,
    Cursor,
    ListLimit,
    Metadata,
    Title,
)

__all__ = ["client_info", "register_conversation_tools"]


def client_info(ctx: ServerContext) -> ClientInfo | None:
    """The MCP client application of this connection, as it introduced itself."""
    params = ctx.session.client_params
    info = getattr(params, "client_info", None)
    if info is None:
        return None
    return ClientInfo(name=str(info.name), version=str(info.version) if info.version else None)


def register_conversation_tools(server: MCPServer[ServerState]) -> None:
    """Add the conversation tools to ``server``."""

    @server.tool(annotations=READ)
    async def whoami(ctx: ServerContext) -> WhoAmI:
        """The principal this connection acts as; tools see only its conversations."""
        principal, auth = principal_of(ctx.request_context.lifespan_context)
        return WhoAmI(
            principal_id=principal.id,
            tenant=principal.tenant,
            admin=principal.admin,
            auth=auth,
            client=client_info(ctx),
        )

    @server.tool(annotations=CREATE)
    async def start_conversation(
        ctx: ServerContext, title: Title = None, metadata: Metadata = None
    ) -> ConversationOut:
        """Start a conversation owned by you."""
        with tool_errors():
            conversation = await scope_for(ctx).start_conversation(title, metadata=metadata)
        return ConversationOut.of(conversation).model_copy(update={"message_count": 0})

    @server.tool(annotations=READ)
    async def list_conversations(
        ctx: ServerContext,
        limit: ListLimit = 20,
        cursor: Cursor = None,
        archived: Annotated[
            bool | None,
            Field(description="false: not archived; true: only archived; null: both."),
        ] = False,
    ) -> ConversationPage:
        """Your conversations, pinned first, then most recently updated."""
        with tool_errors():
            scope = scope_for(ctx)
            page = await scope.list_conversations(
                limit=scope.limits.page_size(limit), cursor=cursor, archived=archived
            )
        return ConversationPage(
            items=[ConversationOut.of(c) for c in page.items],
            next_cursor=page.next_cursor,
            has_more=page.has_more,
        )

    @server.tool(annotations=READ)
    async def get_conversation(
        ctx: ServerContext, conversation_id: ConversationId, limit: ListLimit = 20, cursor: Cursor = None
    ) -> ConversationDetailOut:
        """A conversation and a page of its histories (runs), oldest first."""
        with tool_errors():
            after = _decode_history_cursor(cursor, conversation_id)
            detail = await scope_for(ctx).get_conversation(conversation_id)
        runs = [h for h in detail.histories if after is None or (h.created_at, str(h.id)) > after]
        page = runs[:limit]
        more = len(runs) > limit
        return ConversationDetailOut(
            conversation=ConversationOut.of(detail),
            histories=[HistoryOut.of(h) for h in page],
            next_cursor=_encode_history_cursor(conversation_id, page[-1]) if more else None,
            has_more=more,
        )

    @server.tool(annotations=UPDATE)
    async def update_conversation(
        ctx: ServerContext,
        conversation_id: ConversationId,
        title: Annotated[
            str | None,
            Field(max_length=200, description="New title; an empty string removes it; omit to keep."),
        ] = None,
        metadata: Annotated[
            dict[str, JsonValue] | None, Field(description="Replaces the metadata object; omit to keep.")
        ] = None,
        pinned: Annotated[bool | None, Field(description="Pin or unpin; omit to keep.")] = None,
        archived: Annotated[bool | None, Field(description="Archive or unarchive; omit to keep.")] = None,
    ) -> ConversationOut:
        """Change a conversation; omitted fields stay as they are."""
        changes: dict[str, Any] = {}
        if title is not None:
            changes["title"] = title or None
        for name, value in (("metadata", metadata), ("pinned", pinned), ("archived", archived)):
            if value is not None:
                changes[name] = value
        scope = scope_for(ctx)
        with tool_errors():
            await scope.update_conversation(conversation_id, **changes)
            # Read back: the update's own result has no message count or preview.
            conversation = await scope.get_conversation(conversation_id)
        return ConversationOut.of(conversation)

    @server.tool(annotations=DESTROY)
    async def delete_conversation(ctx: ServerContext, conversation_id: ConversationId) -> Deleted:
        """Soft-delete a conversation with its runs and messages; the operator purges it later."""
        with tool_errors():
            await scope_for(ctx).delete_conversation(conversation_id)
        return Deleted(id=conversation_id, deleted=True)


def _encode_history_cursor(conversation_id: str, last: HistoryDetail) -> str:
    raw = json.dumps(["h", conversation_id, last.created_at.isoformat(), str(last.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_history_cursor(cursor: str | None, conversation_id: str) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        kind, cid, created_at, history_id = data
        if kind != "h" or cid != conversation_id:
            raise ValueError
        return datetime.fromisoformat(created_at), str(history_id)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidInputError("cursor", "is not a cursor from this listing") from None
