"""The capability that records every pydantic-ai run in a chatmemory conversation."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import anyio
import pydantic_ai
from pydantic import JsonValue
from pydantic_ai import ModelRequestNode, RunContext
from pydantic_ai._agent_graph import SetFinalResult
from pydantic_ai.capabilities import AbstractCapability, WrapNodeRunHandler, WrapRunHandler
from pydantic_ai.exceptions import RunCancelled, UserError
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.result import StreamedRunResult
from pydantic_ai.run import AgentRun, AgentRunResult
from pydantic_ai.tools import ToolDefinition

from chatmemory import ChatMemoryError
from chatmemory.recording import added_metadata, model_label, recorder_metadata
from chatmemory.scope import Scope
from chatmemory_pydantic_ai._convert import NATIVE_FORMAT, own_usage, system_prompts, usage_dict
from chatmemory_pydantic_ai._recorder import ERROR_CHARS, RunRecord, settled
from chatmemory_pydantic_ai._reload import ConversationCache

if TYPE_CHECKING:
    from pydantic_ai.capabilities.abstract import AgentNode, NodeResult, ValidatedToolArgs
    from pydantic_ai.models import ModelRequestContext

__all__ = ["ChatMemoryCapability"]

_log = logging.getLogger(__name__)
Status = Literal["completed", "failed", "cancelled"]


@dataclass
class ChatMemoryCapability(AbstractCapability[Any]):
    """Records each agent run as one history of a chatmemory conversation, and resumes from it.

    Give it to an agent (``Agent(model, capabilities=[...])``) or to one run
    (``agent.run(prompt, capabilities=[...])``). A run-level one replaces an agent-level one,
    so a run is never recorded twice.

    - When the run gets no ``message_history``, the conversation is loaded first (every
      history, cancelled and failed ones included), so the model sees what it would have seen
      had the whole conversation been kept in memory, or resumed from ``RunCancelled``. When
      the caller passes ``message_history``, nothing is loaded. An agent-level capability
      remembers what it read and later reads only what was stored since.
    - Each run is one history (``model`` is the run's model, ``system_prompts`` its system
      prompts and instructions), recorded as it goes: each request is stored before it is sent
      to the model (the first one in the transaction that starts the history) and each response
      that calls tools as soon as pydantic-ai records it, so a process killed mid-run loses
      nothing the tools or a later request build on and leaves the history ``running`` (a later
      load on this host marks it ``failed``). A response that calls no tool is stored in the
      transaction that closes the history, right after pydantic-ai has validated it as the run's
      output (or with the request that retries it when the output is refused). The history ends
      ``completed``, ``failed`` with the error, or ``cancelled`` (with the interrupted request
      holding the finished tools' results).
    - pydantic-ai's ``conversation_id`` of the run defaults to the chatmemory conversation id.

    Args:
        chat: the principal's scope; the conversation must be visible to it.
        conversation_id: the chatmemory conversation to record into.
        metadata: added to every history's metadata.
        autoload: load the conversation when the run gets no ``message_history``.

    Raises:
        InvalidInputError: ``metadata`` is not a JSON object (raised here, when the capability is made).
        ConversationNotFound: (from the run) the conversation is not visible to ``chat``.
    """

    chat: Scope
    conversation_id: UUID | str
    _: KW_ONLY
    metadata: Mapping[str, JsonValue] | None = None
    autoload: bool = True
    id: str | None = "chatmemory"
    _cache: ConversationCache = field(
        default_factory=ConversationCache, init=False, repr=False, compare=False
    )
    _record: RunRecord | None = field(default=None, init=False, repr=False, compare=False)
    _live: list[ModelMessage] | None = field(default=None, init=False, repr=False, compare=False)
    _streamed: list[ModelMessage] | None = field(default=None, init=False, repr=False, compare=False)
    _shared_usage: bool = field(default=False, init=False, repr=False, compare=False)
    _tool_calls: int = field(default=0, init=False, repr=False, compare=False)
    _in_node: bool = field(default=False, init=False, repr=False, compare=False)
    _before_stream: list[ModelMessage] | None = field(default=None, init=False, repr=False, compare=False)
    _graph_run: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Checked here, so metadata no history can store fails at once, not in every run.
        self.metadata = added_metadata(self.metadata)

    @classmethod
    def combine(cls, capabilities: Sequence[AbstractCapability[Any]]) -> AbstractCapability[Any]:
        """One capability for several sharing an ``id`` in one list (pydantic-ai keeps one per
        ``id``): refused when they record into different conversations (another id, another
        store, or as another principal), since all but one would silently record nothing.

        Raises:
            UserError: two of them record into different conversations.
        """
        first, *rest = capabilities
        for other in rest:
            if not (
                isinstance(first, ChatMemoryCapability)
                and isinstance(other, ChatMemoryCapability)
                and other.chat.same_store(first.chat)
                and other.chat.principal == first.chat.principal
                and _same_id(other.conversation_id, first.conversation_id)
            ):
                raise UserError(
                    f"two ChatMemoryCapability share the id {first.id!r} but record into different "
                    "conversations (or through different ChatMemory objects, or as different "
                    "principals); pydantic-ai keeps one capability "
                    "per id, so the others would record nothing. Give each its own `id=`, and "
                    "`autoload=False` to all but the one the runs resume from."
                )
        return super().combine(capabilities)

    @classmethod
    def get_serialization_name(cls) -> str | None:
        """``None``: it holds a live store, so it cannot be built from an agent spec."""
        return None

    async def for_run(self, ctx: RunContext[Any]) -> ChatMemoryCapability:
        """A fresh copy per run, so concurrent runs of one agent keep their own state; they share
        what has been read of the conversation."""
        copy = replace(self)
        copy._cache = self._cache
        return copy

    def get_default_conversation_id(self, run_id: str) -> str | None:
        """The chatmemory conversation id, for runs without one of their own."""
        return str(self.conversation_id)

    async def wrap_run(self, ctx: RunContext[Any], *, handler: WrapRunHandler) -> AgentRunResult[Any]:
        """Load the conversation before the run, record the run as it goes, close it however it ends."""
        if self.autoload and not ctx.messages:
            prompted = ctx.prompt is not None  # a run without one makes the open tool calls
            loaded = await self._cache.load(self.chat, self.conversation_id, new_prompt=prompted)
            if any(m.run_id == ctx.run_id for m in loaded):
                # As pydantic-ai refuses it in a ``message_history`` given: the loaded messages
                # would be taken for the run's own, and recorded again.
                raise UserError(
                    f"`run_id={ctx.run_id!r}` already appears in the stored conversation. Each agent "
                    "run needs a distinct `run_id`; use `conversation_id` to correlate across turns."
                )
            ctx.messages[:0] = loaded
        else:  # fail before any model call
            await self.chat.list_messages(conversation_id=self.conversation_id, limit=1)
        metadata: dict[str, JsonValue] = {
            **(self.metadata or {}),
            "framework": NATIVE_FORMAT,
            "framework_version": pydantic_ai.__version__,
            "run_id": ctx.run_id,
            "model_id": ctx.model.model_id,
            **recorder_metadata(),
        }
        record = RunRecord(
            self.chat,
            self.conversation_id,
            str(ctx.run_id),
            model_label(ctx.model.model_name) or type(ctx.model).__name__,
            metadata,
            given=system_prompts(ctx.messages[:1], ()),
        )
        self._record = record
        # Given a usage object that already counts (``usage=ctx.usage`` in a delegating tool), which
        # other runs may count on at the same time: the run's usage is taken from its own messages.
        self._shared_usage = bool(usage_dict(ctx.usage))
        try:
            result = await handler()
        except BaseException as exc:
            await self._stopped(ctx, record, exc)
            raise
        live = self._streamed if self._streamed is not None else result.all_messages()
        await self._finish(record, "completed", usage=self._usage(ctx, live), live=live)
        return result

    async def prepare_model_request(
        self, ctx: RunContext[Any], request_context: ModelRequestContext
    ) -> ModelRequestContext:
        """Store the request (and anything before it) before the model sees it: by now pydantic-ai
        has finished the request it keeps in its history."""
        await self._commit(ctx)
        return request_context

    async def after_node_run(
        self, ctx: RunContext[Any], *, node: AgentNode[Any], result: NodeResult[Any]
    ) -> NodeResult[Any]:
        """Store the response a model request node has just added, unless it calls no tool: that
        one goes with the run's end (or with the request retrying it).

        The node ending a ``run_stream`` run runs once the stream is received, after pydantic-ai
        has answered the tool calls of the final response (the output tool's "Final result
        processed.", the results of the tools it ran) in a request it adds only to the stream
        result's messages; the run's history in ``ctx`` never gets it. From then on the stream
        result's messages are the run's: stored now when they end on that request, and at the
        run's end in place of ``ctx``'s."""
        streamed = _stream_messages(ctx.run_id) if isinstance(node, SetFinalResult) else None
        if streamed is None:
            await self._commit(ctx, hold_answer=True)
        else:
            self._streamed = self._live = streamed
            if self._record is not None:
                await self._record.commit(streamed, hold_answer=True)
        return result

    async def before_node_run(self, ctx: RunContext[Any], *, node: AgentNode[Any]) -> AgentNode[Any]:
        """Take hold of the run's messages, and note the messages there are before a
        ``run_stream`` run's model request streams (by identity: a history processor may shorten
        or rebuild the list before the request).

        pydantic-ai adds a request to the run's messages as its step starts, before the
        step's instructions, tools and ``before_model_request`` hooks are prepared; a run stopped
        meanwhile holds it. The list is the run's own from the first model request on, so it is
        taken here, before any step can add to it (the context of ``wrap_run``, and of the node
        hooks of the node that starts the run, keep the list the run was given).

        ``run_stream`` fires this hook for a model request before it streams, outside
        ``wrap_node_run``, which it runs for that node only if the response is not the run's
        final one. The final response joins the stream result's messages
        (``StreamedRunResult.all_messages()``) only once the stream is consumed to its end."""
        if self._streamed is None:
            self._live = ctx.messages
        if self._graph_run is None:
            self._graph_run = _graph_run_on_stack()  # for ``_stop_steps``
        if isinstance(node, ModelRequestNode) and not self._in_node:
            self._before_stream = list(ctx.messages)  # kept alive, so their identities stay theirs
        return node

    async def wrap_node_run(
        self, ctx: RunContext[Any], *, node: AgentNode[Any], handler: WrapNodeRunHandler[Any]
    ) -> NodeResult[Any]:
        """Note a ``run_stream`` run's model request running as a node (see ``before_node_run``)."""
        if isinstance(node, ModelRequestNode):
            self._before_stream = None  # its response is the run's, whatever happens next
        self._in_node = True
        try:
            return await handler(node)
        finally:
            self._in_node = False

    async def after_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
        result: Any,
    ) -> Any:
        """Count the tools the run has run, for the usage of a run sharing its usage object."""
        self._tool_calls += 1
        return result

    def _usage(self, ctx: RunContext[Any], live: Sequence[ModelMessage]) -> dict[str, Any] | None:
        if not self._shared_usage:
            return usage_dict(ctx.usage) or None
        return own_usage(live, ctx.run_id, self._tool_calls) or None

    async def _commit(self, ctx: RunContext[Any], *, hold_answer: bool = False) -> None:
        # The context given to wrap_run keeps the list the run started from; the run works on its
        # own, seen only from the later hooks.
        self._live = ctx.messages
        if self._record is not None:
            await self._record.commit(ctx.messages, hold_answer=hold_answer)

    async def _stopped(self, ctx: RunContext[Any], record: RunRecord, exc: BaseException) -> None:
        await _stop_steps(self._graph_run)
        live = self._live if self._live is not None else list(ctx.messages)
        # A response still streaming when the run stopped (a ``run_stream`` block left early) is
        # not in the run's messages (``StreamedRunResult.all_messages()``), nor is the final
        # response of a ``run_stream`` block left before its stream was consumed to the end,
        # even when the whole response had arrived; one cut off by the run's end is, marked
        # ``interrupted``.
        live = [m for m in live if not (isinstance(m, ModelResponse) and m.state == "incomplete")]
        kept = self._before_stream if self._streamed is None else None
        before = None if kept is None else {id(message) for message in kept}
        while (
            before is not None and live and isinstance(live[-1], ModelResponse) and id(live[-1]) not in before
        ):
            live.pop()  # the streamed final response, after its request
        status, error = _outcome(ctx, exc)
        error = error[: self.chat.limits.content]  # within a store opened with a lower limit too
        try:
            await self._finish(record, status, usage=self._usage(ctx, live), error=error, live=live)
        except ChatMemoryError:
            # The run's own error is what the caller must see; the store's goes to the log.
            _log.exception(
                "could not record the end of run %s in conversation %s", ctx.run_id, self.conversation_id
            )

    async def _finish(
        self,
        record: RunRecord,
        status: Status,
        *,
        usage: Mapping[str, Any] | None,
        error: str | None = None,
        live: Sequence[ModelMessage] = (),
    ) -> None:
        await record.finish(status, usage=usage, error=error, live=live)
        if record.history_id is not None:
            self._cache.finished(record.history_id, "failed" if record.failure else status, record.started_at)


_STREAM_COMPLETION = StreamedRunResult._marked_completed.__code__


def _same_id(one: UUID | str, other: UUID | str) -> bool:
    """Whether two conversation ids name the same conversation (however each is written)."""
    try:
        return UUID(str(one)) == UUID(str(other))
    except ValueError:  # not an id: the run refuses it
        return str(one) == str(other)


def _stream_messages(run_id: str | None) -> list[ModelMessage] | None:
    """The messages of run ``run_id``'s ``run_stream`` result (``StreamedRunResult.all_messages()``),
    called from the hooks of the node that ends that run.

    pydantic-ai gives no hook the stream result. It ends a streamed run from inside the result's
    completion (which adds the final response and the request answering its tool calls to the
    result's own messages, then runs the ending node), so the result is found on the call stack.
    ``None`` anywhere else.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _STREAM_COMPLETION:
            owner = frame.f_locals.get("self")
            if isinstance(owner, StreamedRunResult) and owner.run_id == run_id:
                return owner.all_messages()
        frame = frame.f_back
    return None


def _graph_run_on_stack() -> Any:
    """The graph run of the agent run whose node hook calls this (found on the call stack:
    pydantic-ai gives no hook its run), or ``None``."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        for name in ("self", "agent_run"):  # ``AgentRun._run_node_with_hooks``; ``run_stream``
            value = frame.f_locals.get(name)
            if isinstance(value, AgentRun):
                return value._graph_run
        frame = frame.f_back
    return None


async def _stop_steps(graph_run: Any) -> None:
    """Stop the steps of the run's graph run still running, and wait for their end.

    pydantic-ai runs each step of a run (a model request, the tools a response calls) in a task
    of its graph. A run stopped from outside (``task.cancel()``, a timeout) stops the task
    running the agent, not that one: it goes on until pydantic-ai tears the run down, after
    every hook of the run, ``wrap_run`` included, and may meanwhile add to the run's messages
    the response it was waiting for, the ``interrupted`` request of its tools, or store a
    request through ``prepare_model_request``. It is stopped here as the teardown stops it
    (through its cancel scope), so the run's messages are final when its history is closed.

    pydantic-ai gives no hook those scopes: they are the graph's (pydantic_graph, pinned with
    pydantic-ai), each with the task it runs in.
    """
    iterator = getattr(graph_run, "_iterator_instance", None)
    scopes = list(getattr(iterator, "cancel_scopes", {}).values())
    current = asyncio.current_task()
    steps: list[asyncio.Task[Any]] = []
    for scope in scopes:
        task = getattr(scope, "_host_task", None)
        if not isinstance(task, asyncio.Task) or task is current or task.done():
            continue
        if isinstance(scope, anyio.CancelScope):
            scope.cancel()
            steps.append(task)
    if steps:
        await settled(asyncio.wait(steps))


def _outcome(ctx: RunContext[Any], exc: BaseException) -> tuple[Status, str]:
    """How a run that raised ``exc`` ended, and the error to record.

    pydantic-ai turns its own cancellation (``RunContext.cancel()``, ``AgentRun.cancel()``, a
    run's ``timeout``) into ``RunCancelled`` only after the run's hooks are done, so here it is
    still the ``CancelledError`` that stopped the run; the run's cancellation controller tells
    the two apart.
    """
    if isinstance(exc, RunCancelled):
        return "cancelled", f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | GeneratorExit):
        controller = getattr(ctx, "_cancellation", None)
        if controller is not None and controller.cancel_requested:
            if controller.timed_out:
                return "cancelled", "RunTimedOut: The agent run timed out."
            return "cancelled", "RunCancelled: The agent run was cancelled."
        return "cancelled", f"{type(exc).__name__}: the task running the agent was cancelled"
    return "failed", f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
