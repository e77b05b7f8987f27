"""``ChatMemoryMiddleware``: records each ``create_agent`` run as one chatmemory history."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any, Literal, NotRequired, TypeVar
from uuid import UUID

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelCallResult,
    ModelRequest,
    ModelResponse,
    PrivateStateAttr,
)
from langchain_core.messages import AIMessage, BaseMessage, RemoveMessage, ToolMessage
from langgraph.errors import GraphBubbleUp
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command

from chatmemory import ConflictError, HistoryNotFound
from chatmemory.loops import BackgroundLoop, HomeLoop
from chatmemory.scope import Scope
from chatmemory_langchain._recorder import Recorder, Run, stamp

__all__ = ["ChatMemoryMiddleware", "ChatMemoryState"]

T = TypeVar("T")

SYNC_HINT = "use ainvoke/astream there, or call invoke from another thread"
"""What to do instead of a synchronous LangChain call on the loop that owns the store."""

_KEEP_RUNS = 256
UNFINISHED = (
    "the run stopped before finishing: an error outside model and tool calls, "
    "or an interrupt that was not resumed"
)


class ChatMemoryState(AgentState[Any]):
    """The agent state plus the key of the run being recorded."""

    chatmemory_run: NotRequired[Annotated[str, PrivateStateAttr]]


class ChatMemoryMiddleware(AgentMiddleware[ChatMemoryState, Any, Any]):
    """Records every run of a ``create_agent`` agent in one chatmemory conversation, and
    resumes the conversation from the store when the agent has no memory of its own.

    Each ``invoke``/``ainvoke``/``stream``/``astream`` becomes one history, started at the
    first model call with that model and the system prompt, in the transaction that stores
    the input. Messages are appended as the run goes (the input and tool results before each
    model call, each response after it), so a run that raises leaves a ``failed`` history
    holding everything up to the error.
    Each assistant message records the model that produced it: the provider-reported
    ``response_metadata["model_name"]``, else the model of the request this middleware saw
    (stamped onto the message). Tool calls and results become ``ToolCallPart`` and
    ``ToolResultPart``, images and files their parts, and the LangChain message itself is
    kept as ``native`` (format ``"langchain"``) so reloading is lossless.

    At the start of a run, when the graph state holds only the new input (no checkpointer,
    or a new thread), the stored conversation is put before it, so the model sees what it
    would have seen had the agent kept the whole conversation in memory. When the state
    already holds stored messages (a checkpointer thread), nothing is loaded and only the
    messages new to the store are recorded.

    Placement: put it after middleware that only switches models (so the stamped model is
    the one called) and before middleware that retries or falls back on errors (an error
    leaving this middleware's model or tool call ends the run and fails its history).

    Event loops: every store call of one instance goes to its home loop (``loop`` when given,
    else the loop running when the middleware is created, else a background loop, shared
    over a store opened from a URL; ``close()`` stops one of its own), by the rules of
    ``chatmemory.loops``. Sync ``invoke``/``stream``
    work from any thread but the home loop's own, where they raise ``RuntimeError`` at once
    (use ``ainvoke`` there, or ``await asyncio.to_thread(agent.invoke, ...)``); no call waits
    for a home loop that is idle, closed or blocked.

    Args:
        chat: the principal's scope (``memory.scoped(principal)``).
        conversation_id: the conversation to record into and resume from.
        metadata: merged into each history's metadata.
        autoload: load the stored conversation into runs that start without it.
        loop: the home loop (or ``BackgroundLoop``): the one a ``ChatMemory(engine)`` over your
            own asyncpg engine belongs to.

    Raises:
        InvalidInputError: ``metadata`` is not a JSON object.
    """

    state_schema = ChatMemoryState

    def __init__(
        self,
        chat: Scope,
        conversation_id: UUID | str,
        *,
        metadata: Mapping[str, Any] | None = None,
        autoload: bool = True,
        loop: asyncio.AbstractEventLoop | BackgroundLoop | None = None,
    ) -> None:
        super().__init__()
        self.chat = chat
        self.conversation_id = conversation_id
        self._recorder = Recorder(chat, conversation_id, metadata=metadata, autoload=autoload)
        self._home = HomeLoop(loop, hint=SYNC_HINT, any_loop=chat.any_loop)
        self._runs: OrderedDict[str, Run] = OrderedDict()

    def close(self) -> None:
        """Stop the background loop this middleware started, if any."""
        self._home.close()

    # -- the shared implementation (async, on the home loop) ----------------------------------

    async def _begin(self, state: ChatMemoryState, runtime: Runtime[Any]) -> dict[str, Any]:
        messages = state["messages"]
        previous = self._runs.pop(state.get("chatmemory_run") or "", None)
        if previous is not None:
            # A new input on a thread whose last run never reached after_agent: that run ended
            # on an error no hook of this middleware saw, or on an interrupt left unanswered.
            # Closed already when another agent object resumed and finished it.
            with contextlib.suppress(ConflictError, HistoryNotFound):
                await self._recorder.finish(previous, "failed", RuntimeError(UNFINISHED))
        run, loaded = await self._recorder.begin(messages, thread=_thread_of(runtime))
        key = uuid.uuid4().hex
        self._runs[key] = run
        while len(self._runs) > _KEEP_RUNS:
            self._runs.popitem(last=False)
        update: dict[str, Any] = {"chatmemory_run": key}
        if loaded is not None:
            update["messages"] = [RemoveMessage(id=REMOVE_ALL_MESSAGES), *loaded]
        return update

    async def _run_of(self, state: Mapping[str, Any], runtime: object) -> Run:
        key = state.get("chatmemory_run") or uuid.uuid4().hex
        run = self._runs.get(key)
        if run is None:  # e.g. resumed from a checkpoint after an interrupt, in another process
            run = await self._recorder.resume(state.get("messages", []), _thread_of(runtime))
            self._runs[key] = run
        return run

    async def _before_model(self, request: ModelRequest[Any]) -> Run:
        run = await self._run_of(request.state, request.runtime)
        await self._recorder.open(run, request.model, request.system_prompt, _thread_of(request.runtime))
        await self._record(run, request.state["messages"])
        return run

    async def _after_model(self, run: Run, request: ModelRequest[Any], result: ModelCallResult[Any]) -> None:
        stamp(_messages_of(result), request.model)
        await self._record(run, _messages_of(result))

    async def _record(self, run: Run, messages: Sequence[BaseMessage]) -> None:
        """Record ``messages``; cancelled meanwhile (the write is seen through), the run is
        closed ``cancelled``, as when its model or tool call is."""
        try:
            await self._recorder.record(run, messages)
        except asyncio.CancelledError as exc:
            await self._fail(run, exc)
            raise

    async def _fail(self, run: Run, error: BaseException) -> None:
        if isinstance(error, GraphBubbleUp):  # an interrupt or a handoff, not a failure
            return
        status: Literal["failed", "cancelled"] = "failed"
        if isinstance(error, asyncio.CancelledError | KeyboardInterrupt):
            status = "cancelled"
        await self._recorder.finish(run, status, error)

    async def _tool_failed(self, request: ToolCallRequest, error: BaseException) -> None:
        await self._fail(await self._run_of(request.state, request.runtime), error)

    async def _tool_returned(self, request: ToolCallRequest, result: ToolMessage | Command[Any]) -> None:
        outputs = [result] if isinstance(result, ToolMessage) else _command_messages(result)
        stamp(outputs, None)
        run = await self._run_of(request.state, request.runtime)
        if isinstance(result, Command) and result.graph == Command.PARENT:
            # A handoff to another node of the parent graph (a swarm or supervisor): this
            # agent's run ends here, its after_agent never reached.
            await self._recorder.finish(run, "completed", messages=outputs)
            self._runs.pop(request.state.get("chatmemory_run") or "", None)
            return
        await self._record(run, outputs)

    async def _end(self, state: ChatMemoryState, runtime: Runtime[Any]) -> None:
        run = await self._run_of(state, runtime)
        # A run that called no model (a guardrail answered, a call limit was reached) is
        # recorded too, when it added messages.
        await self._recorder.open(run, None, None, _thread_of(runtime))
        await self._recorder.finish(run, "completed", messages=state["messages"])
        self._runs.pop(state.get("chatmemory_run") or "", None)

    # -- LangChain hooks: async ---------------------------------------------------------------

    async def abefore_agent(self, state: ChatMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Start the run, loading the stored conversation when the state lacks it.

        Raises:
            ConversationNotFound: the conversation is not visible to the principal.
        """
        return await self._home.call(self._begin(state, runtime))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelCallResult[Any]:
        """Record the messages the model is about to see, then its response."""
        run = await self._home.call(self._before_model(request))
        try:
            result = await handler(request)
        except BaseException as exc:
            await self._home.call(self._fail(run, exc))
            raise
        await self._home.call(self._after_model(run, request, result))
        return result

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        """Record the tool's result as soon as it returns; fail the history when a tool error
        ends the run."""
        try:
            result = await handler(request)
        except BaseException as exc:
            await self._home.call(self._tool_failed(request, exc))
            raise
        await self._home.call(self._tool_returned(request, result))
        return result

    async def aafter_agent(self, state: ChatMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Record what is left and complete the history."""
        await self._home.call(self._end(state, runtime))
        return None

    # -- LangChain hooks: sync (same implementation, run on the home loop) --------------------

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._home.call_sync(coro)

    def before_agent(self, state: ChatMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Sync form of ``abefore_agent``."""
        return self._sync(self._begin(state, runtime))

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelCallResult[Any]:
        """Sync form of ``awrap_model_call``."""
        run = self._sync(self._before_model(request))
        try:
            result = handler(request)
        except BaseException as exc:
            self._sync(self._fail(run, exc))
            raise
        self._sync(self._after_model(run, request, result))
        return result

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        """Sync form of ``awrap_tool_call``."""
        try:
            result = handler(request)
        except BaseException as exc:
            self._sync(self._tool_failed(request, exc))
            raise
        self._sync(self._tool_returned(request, result))
        return result

    def after_agent(self, state: ChatMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Sync form of ``aafter_agent``."""
        self._sync(self._end(state, runtime))
        return None


def _thread_of(runtime: object) -> str | None:
    thread_id = getattr(getattr(runtime, "execution_info", None), "thread_id", None)
    return thread_id if isinstance(thread_id, str) else None


def _command_messages(command: Command[Any]) -> list[BaseMessage]:
    update = command.update
    found = update.get("messages") if isinstance(update, Mapping) else None
    if not isinstance(found, list):
        return []
    # A RemoveMessage is an edit of the state, not a message: the store keeps what it removes.
    return [m for m in found if isinstance(m, BaseMessage) and not isinstance(m, RemoveMessage)]


def _messages_of(result: ModelCallResult[Any]) -> list[BaseMessage]:
    if isinstance(result, AIMessage):
        return [result]
    if isinstance(result, ExtendedModelResponse):
        return list(result.model_response.result)
    return list(result.result)
