"""The JSON operations: each translates one request into one call of the caller's ``Scope``."""

from __future__ import annotations

from typing import Any

from chatmemory import (
    Context,
    Conversation,
    ConversationDetail,
    ConversationSummary,
    History,
    HistoryDetail,
    Message,
    MessageHit,
    Page,
)
from chatmemory_server.inputs import (
    AppendedMessages,
    AppendMessages,
    CompleteMessage,
    ContextQuery,
    DetailQuery,
    FailMessage,
    FinishHistory,
    ListConversationsQuery,
    ListMessagesQuery,
    NewConversation,
    NewHistory,
    SearchQuery,
    UpdateConversation,
    UpdateHistory,
    Whoami,
)
from chatmemory_server.routing import Api, Call

__all__ = ["api"]

api = Api()

_ARCHIVED = {"false": False, "true": True, "all": None}


def _given(body: Any) -> dict[str, Any]:
    """The fields a request body sets, so that a field left out is left unchanged."""
    return {name: getattr(body, name) for name in body.model_fields_set}


@api.route("GET", "/me", response=Whoami)
async def whoami(call: Call) -> Whoami:
    """The principal the bearer token stands for."""
    p = call.chat.principal
    return Whoami(id=p.id, tenant=p.tenant, admin=p.admin)


@api.route("POST", "/conversations", body=NewConversation, response=Conversation, status=201)
async def start_conversation(call: Call) -> Conversation:
    """Start a conversation owned by the caller."""
    body: NewConversation = call.body
    return await call.chat.start_conversation(body.title, metadata=body.metadata)


@api.route("GET", "/conversations", query=ListConversationsQuery, response=Page[ConversationSummary])
async def list_conversations(call: Call) -> Page[ConversationSummary]:
    """A page of the caller's conversations, pinned first, then most recently updated, with previews."""
    q: ListConversationsQuery = call.query
    return await call.chat.list_conversations(
        limit=call.chat.limits.page_size(q.limit), cursor=q.cursor, archived=_ARCHIVED[q.archived]
    )


@api.route("GET", "/conversations/{conversation_id}", query=DetailQuery, response=ConversationDetail)
async def get_conversation(call: Call) -> ConversationDetail:
    """A conversation with its histories (and their messages with ``?messages=true``)."""
    q: DetailQuery = call.query
    return await call.chat.get_conversation(call.params["conversation_id"], messages=q.messages)


@api.route("PATCH", "/conversations/{conversation_id}", body=UpdateConversation, response=Conversation)
async def update_conversation(call: Call) -> Conversation:
    """Change a conversation's title, metadata, pinned or archived flag."""
    return await call.chat.update_conversation(call.params["conversation_id"], **_given(call.body))


@api.route("DELETE", "/conversations/{conversation_id}", status=204)
async def delete_conversation(call: Call) -> None:
    """Delete a conversation with its histories and messages."""
    await call.chat.delete_conversation(call.params["conversation_id"])


@api.route(
    "POST", "/conversations/{conversation_id}/histories", body=NewHistory, response=History, status=201
)
async def start_history(call: Call) -> History:
    """Start recording one agent run in a conversation."""
    body: NewHistory = call.body
    return await call.chat.start_history(
        call.params["conversation_id"],
        model=body.model,
        system_prompts=body.system_prompts,
        metadata=body.metadata,
    )


@api.route("GET", "/histories/{history_id}", query=DetailQuery, response=HistoryDetail)
async def get_history(call: Call) -> HistoryDetail:
    """A history (and its messages with ``?messages=true``)."""
    q: DetailQuery = call.query
    return await call.chat.get_history(call.params["history_id"], messages=q.messages)


@api.route("PATCH", "/histories/{history_id}", body=UpdateHistory, response=History)
async def update_history(call: Call) -> History:
    """Change a running history's model, system prompts or metadata."""
    return await call.chat.update_history(call.params["history_id"], **_given(call.body))


@api.route("POST", "/histories/{history_id}/finish", body=FinishHistory, response=History)
async def finish_history(call: Call) -> History:
    """Close a running history; nothing more can be appended to it."""
    body: FinishHistory = call.body
    return await call.chat.finish_history(
        call.params["history_id"], status=body.status, usage=body.usage, error=body.error
    )


@api.route("DELETE", "/histories/{history_id}", status=204)
async def delete_history(call: Call) -> None:
    """Delete a history with its messages."""
    await call.chat.delete_history(call.params["history_id"])


@api.route(
    "POST", "/histories/{history_id}/messages", body=AppendMessages, response=AppendedMessages, status=201
)
async def append_messages(call: Call) -> AppendedMessages:
    """Append messages to a running history, all or none; a stored ``key`` is returned, not repeated."""
    body: AppendMessages = call.body
    return AppendedMessages(
        messages=await call.chat.append_messages(call.params["history_id"], body.messages)
    )


@api.route("GET", "/histories/{history_id}/messages", query=ListMessagesQuery, response=Page[Message])
async def list_history_messages(call: Call) -> Page[Message]:
    """A page of a history's messages in order."""
    q: ListMessagesQuery = call.query
    return await call.chat.list_messages(
        history_id=call.params["history_id"],
        limit=call.chat.limits.page_size(q.limit),
        cursor=q.cursor,
        newest_first=q.newest_first,
    )


@api.route(
    "GET", "/conversations/{conversation_id}/messages", query=ListMessagesQuery, response=Page[Message]
)
async def list_conversation_messages(call: Call) -> Page[Message]:
    """A page of a conversation's messages in order, across its histories."""
    q: ListMessagesQuery = call.query
    return await call.chat.list_messages(
        conversation_id=call.params["conversation_id"],
        limit=call.chat.limits.page_size(q.limit),
        cursor=q.cursor,
        newest_first=q.newest_first,
    )


@api.route("GET", "/messages/{message_id}", response=Message)
async def get_message(call: Call) -> Message:
    """One message."""
    return await call.chat.get_message(call.params["message_id"])


@api.route("POST", "/messages/{message_id}/complete", body=CompleteMessage, response=Message)
async def complete_message(call: Call) -> Message:
    """Fill in a pending message and mark it complete."""
    body: CompleteMessage = call.body
    return await call.chat.complete_message(call.params["message_id"], content=body.content, model=body.model)


@api.route("POST", "/messages/{message_id}/fail", body=FailMessage, response=Message)
async def fail_message(call: Call) -> Message:
    """Mark a pending message as failed."""
    body: FailMessage = call.body
    return await call.chat.fail_message(call.params["message_id"], error=body.error)


@api.route("DELETE", "/messages/{message_id}", status=204)
async def delete_message(call: Call) -> None:
    """Delete one message."""
    await call.chat.delete_message(call.params["message_id"])


@api.route("GET", "/search", query=SearchQuery, response=Page[MessageHit])
async def search_messages(call: Call) -> Page[MessageHit]:
    """Full-text search of the caller's messages, most relevant first."""
    q: SearchQuery = call.query
    return await call.chat.search_messages(
        q.q,
        conversation_id=q.conversation_id,
        history_id=q.history_id,
        role=q.role,
        limit=call.chat.limits.page_size(q.limit),
        cursor=q.cursor,
    )


@api.route("GET", "/conversations/{conversation_id}/context", query=ContextQuery, response=Context)
async def get_context(call: Call) -> Context:
    """The latest complete messages of a conversation that fit a token budget: what to resume with."""
    q: ContextQuery = call.query
    return await call.chat.get_context(
        call.params["conversation_id"], max_tokens=q.max_tokens, max_messages=q.max_messages
    )


@api.route("GET", "/conversations/{conversation_id}/export", response=dict[str, Any])
async def export_conversation(call: Call) -> dict[str, Any]:
    """The whole conversation as one document in the ``chatmemory import`` format."""
    return await call.chat.export_conversation(call.params["conversation_id"])
