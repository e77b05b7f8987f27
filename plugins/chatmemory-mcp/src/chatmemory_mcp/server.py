"""Building the MCP server: identity strategy, lifespan-held store, tools, resources, prompts."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any, Literal

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, Icon, InputRequiredResult, TextContent, ToolAnnotations
from mcp.types import Tool as MCPTool
from pydantic import AnyUrl, ValidationError
from pydantic_core import to_json

from chatmemory import ChatMemory, ChatMemoryError, NotFoundError, Principal
from chatmemory_mcp.conversation_tools import register_conversation_tools
from chatmemory_mcp.errors import (
    RESOURCE_NOT_FOUND,
    ArgumentError,
    MissingError,
    argument_text,
    validation_text,
)
from chatmemory_mcp.history_tools import register_history_tools
from chatmemory_mcp.identity import AuthKind, ServerState, scope_for
from chatmemory_mcp.models import wire
from chatmemory_mcp.resources import register_prompts, register_resources
from chatmemory_mcp.run_tools import register_run_tools
from chatmemory_mcp.schema import ToolSpec, compact_schema
from chatmemory_mcp.search_tools import register_search_tools

__all__ = ["CORE_TOOLS", "INSTRUCTIONS", "ChatMemoryServer", "ToolSet", "build_server"]

ToolSet = Literal["core", "all"]
CORE_TOOLS = frozenset(
    {"record_run", "list_conversations", "get_context", "list_messages", "search_messages", "whoami"}
)
"""The tools of ``tools="core"``: record a run in one call, find and resume conversations."""

INSTRUCTIONS = """\
chatmemory keeps the record of your conversations: a conversation holds histories (one per
run, with the model that drove it), and each history holds its ordered messages.
Record a finished run in one call: record_run. Step by step: start_history -> append_messages
(batches, each message with a `key`) -> finish_history.
Resume: get_context (latest messages within a token budget), or list_messages to page.
Lists are paged: pass `next_cursor` back as `cursor`. Long content is clipped and flagged `truncated`."""


class ChatMemoryServer(MCPServer[ServerState]):
    """``MCPServer`` speaking the way chatmemory's tools promise.

    Unknown arguments are refused with the accepted names; every argument error reads the
    same way; results carry compact JSON without null or default fields, in both the text
    and the structured copy; ``tools/list`` schemas are compacted; a missing resource
    answers -32002.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._specs: dict[str, ToolSpec] = {}
        self._schemas: dict[str, dict[str, Any]] | None = None

    def add_tool(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: ToolAnnotations | None = None,
        icons: list[Icon] | None = None,
        meta: dict[str, Any] | None = None,
        structured_output: bool | None = None,
    ) -> None:
        """Register a tool, remembering its argument aliases and output model."""
        super().add_tool(fn, name, title, description, annotations, icons, meta, structured_output)
        self._specs[name or fn.__name__] = ToolSpec.of(fn)
        self._schemas = None

    def remove_tool(self, name: str) -> None:
        """Remove a tool from the server by name.

        Raises:
            ToolError: no such tool.
        """
        super().remove_tool(name)
        self._specs.pop(name, None)
        self._schemas = None

    async def list_tools(self) -> list[MCPTool]:
        """The tools, with compacted input and output schemas."""
        return [
            tool.model_copy(
                update={
                    "description": " ".join((tool.description or "").split()),
                    "input_schema": compact_schema(tool.input_schema),
                    "output_schema": None
                    if tool.output_schema is None
                    else compact_schema(tool.output_schema, output=True),
                }
            )
            for tool in await super().list_tools()
        ]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[ServerState, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        """Call a tool, refusing unknown arguments and wording every argument error alike.

        Raises:
            ToolError: unknown tool, unknown or invalid arguments, or the tool's own failure.
        """
        spec = self._specs.get(name)
        if spec is None:
            raise ToolError(f"Unknown tool: {name}. Tools: {', '.join(sorted(self._specs))}.")
        schema = (await self._input_schemas()).get(name)
        _check_names(name, spec, arguments)
        try:
            result = await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(f"{name}: {validation_text(cause, schema)}") from cause
            if isinstance(cause, MissingError) and context is not None:
                misplaced = await _misplaced(context, cause.kind, cause.object_id)
                if misplaced:
                    raise ToolError(
                        f"{name}: {cause.kind} {cause.object_id} not found: {misplaced}"
                    ) from cause
            if isinstance(cause, ArgumentError):
                # The store refuses values the schema accepts (a title with a conversation_id, a
                # repeated key): its reason says what to change, the schema's type would mislead.
                raise ToolError(f"{name}: {argument_text(cause.field, cause.reason, None)}") from cause
            if isinstance(cause, ToolError) and not isinstance(exc, UnexpectedToolError):
                # Any other deliberate failure (a conflict, the store unavailable) is worded the
                # same way, without the SDK's "Error executing tool" (which a crash keeps).
                raise ToolError(f"{name}: {cause}") from cause
            raise
        if isinstance(result, InputRequiredResult) or result.is_error or spec.output is None:
            return result
        return compact_result(spec.output.model_validate(result.structured_content))

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[ServerState, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        """Read a resource; one that does not exist (or is not yours) answers -32002.

        Raises:
            MCPError: -32002 for a missing resource, -32602 for a malformed request.
            ResourceError: the resource failed.
        """
        try:
            return await super().read_resource(uri, context)
        except ResourceNotFoundError as exc:
            raise MCPError(code=RESOURCE_NOT_FOUND, message=str(exc), data={"uri": str(uri)}) from None

    def tool_names(self) -> list[str]:
        """The names of the tools this server exposes."""
        return sorted(self._specs)

    async def _input_schemas(self) -> dict[str, dict[str, Any]]:
        if self._schemas is None:
            self._schemas = {t.name: t.input_schema for t in await super().list_tools()}
        return self._schemas


def compact_result(model: Any) -> CallToolResult:
    """A tool result of ``model``: compact JSON without null or default fields, as text and structured."""
    data = wire(model)
    return CallToolResult(
        content=[TextContent(type="text", text=to_json(data).decode())], structured_content=data
    )


async def _misplaced(ctx: Context[ServerState, Any], kind: str, object_id: str) -> str:
    """What a missing id names instead, among the caller's own objects (``""``: nothing).

    Only what the caller may see is looked up, so another principal's ids still read as missing.
    """
    scope = scope_for(ctx)
    try:
        if kind == "conversation":
            try:
                history = await scope.get_history(object_id, messages=False)
            except NotFoundError:
                message = await scope.get_message(object_id)
                return (
                    f"it is a message id (in conversation {message.conversation_id}, history "
                    f"{message.history_id}). Use one of those ids."
                )
            return (
                f"it is a history id (in conversation {history.conversation_id}). Pass it as history_id, "
                f"or use conversation_id {history.conversation_id}."
            )
        if kind == "history":
            await scope.get_conversation(object_id)
            return "it is a conversation id. Call get_conversation with it to see its histories."
    except ChatMemoryError:
        pass
    return ""


def _check_names(tool: str, spec: ToolSpec, arguments: dict[str, Any]) -> None:
    unknown = [key for key in arguments if key not in spec.names]
    if not unknown:
        _check_repeats(tool, spec, arguments)
        return
    accepted = sorted(set(spec.names.values()))
    texts = []
    for key in unknown:
        close = difflib.get_close_matches(key, list(spec.names), n=1)
        hint = f" (did you mean `{spec.names[close[0]]}`?)" if close else ""
        shown = key if len(key) <= 40 else key[:40] + "…"
        texts.append(f"unknown argument `{shown}`{hint}")
    raise ToolError(f"{tool}: {'; '.join(texts)}. Accepted arguments: {', '.join(accepted) or 'none'}.")


def _check_repeats(tool: str, spec: ToolSpec, arguments: dict[str, Any]) -> None:
    """Refuse an argument sent under two of its names with different values (one would be ignored)."""
    seen: dict[str, str] = {}
    for key, value in arguments.items():
        name = spec.names[key]
        first = seen.setdefault(name, key)
        if first != key and arguments[first] != value:
            pair = " and ".join(f"`{k}`" for k in sorted((first, key)))
            raise ToolError(f"{tool}: {pair} are names of one argument, `{name}`; send it once.")


def build_server(
    *,
    principal: Principal | None = None,
    token_verifier: TokenVerifier | None = None,
    auth_settings: AuthSettings | None = None,
    auth: AuthKind = "stdio",
    memory: ChatMemory | None = None,
    url: str | None = None,
    tools: ToolSet = "all",
) -> ChatMemoryServer:
    """The chatmemory MCP server.

    Give either a fixed ``principal`` (stdio, or loopback HTTP without auth) or a
    ``token_verifier`` with ``auth_settings`` (HTTP); never both, so a request without a
    verified token can never act as a default user. The store is ``memory`` when given
    (owned by the caller), else it is opened at ``url`` (default as ``ChatMemory.open``)
    when the server starts, migrating the schema if needed, and closed when it stops.
    ``tools="core"`` exposes only ``CORE_TOOLS``, for clients with little room for tools.

    Raises:
        ValueError: neither or both of ``principal`` and ``token_verifier``, or an unknown ``tools``.
    """
    if (principal is None) == (token_verifier is None):
        raise ValueError("give exactly one of principal (fixed identity) or token_verifier (bearer tokens)")
    if (token_verifier is None) != (auth_settings is None):
        raise ValueError("token_verifier and auth_settings go together")
    if tools not in ("core", "all"):
        raise ValueError("tools must be 'core' or 'all'")

    @asynccontextmanager
    async def lifespan(_: MCPServer[ServerState]) -> AsyncIterator[ServerState]:
        if memory is not None:
            yield ServerState(memory=memory, principal=principal, auth=auth)
            return
        async with ChatMemory.open(url, migrate=True) as opened:
            yield ServerState(memory=opened, principal=principal, auth=auth)

    server = ChatMemoryServer(
        "chatmemory",
        instructions=INSTRUCTIONS,
        version=version("chatmemory-mcp"),
        token_verifier=token_verifier,
        auth=auth_settings,
        lifespan=lifespan,
    )
    register_conversation_tools(server)
    register_history_tools(server)
    register_run_tools(server)
    register_search_tools(server)
    register_resources(server)
    register_prompts(server)
    if tools == "core":
        for name in server.tool_names():
            if name not in CORE_TOOLS:
                server.remove_tool(name)
    return server
