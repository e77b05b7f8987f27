"""The capability that records every pydantic-ai run in a chatmemory conversation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import anyio
import pydantic_ai
from pydantic import JsonValue
from pydantic_ai import RunContext
from pydantic_ai.capabilities import AbstractCapability, WrapRunHandler
from pydantic_ai.messages import ModelMessage
from pydantic_ai.run import AgentRunResult

from chatmemory import ChatMemoryError
from chatmemory.scope import Scope
from chatmemory_pydantic_ai._convert import NATIVE_FORMAT, system_prompts, to_new_messages, usage_dict
from chatmemory_pydantic_ai._reload import load_messages

if TYPE_CHECKING:
    from pydantic_ai.capabilities.abstract import AgentNode, NodeResult
    from pydantic_ai.models import ModelRequestContext

__all__ = ["ChatMemoryCapability"]

_log = logging.getLogger(__name__)
_BATCH = 100
_ERROR_CHARS = 10_000


@dataclass
class ChatMemoryCapability(AbstractCapability[Any]):
    """Records each agent run as one history of a chatmemory conversation, and resumes from it.

    Give it to an agent (``Agent(model, capabilities=[...])``) or to one run
    (``agent.run(prompt, capabilities=[...])``). A run-level one replaces an agent-level one,
    so a run is never recorded twice.

    - When the run gets no ``message_history``, the conversation's completed histories are
      loaded first, so the model sees what it would have seen had the whole conversation been
      kept in memory. When the caller passes ``message_history``, nothing is loaded.
    - When the run ends, its new messages are stored as one history: ``model`` is the run's
      model, ``system_prompts`` its system prompts and instructions, and each assistant
      message carries the model that produced it. A run that raises is stored as ``failed``
      (``cancelled`` when cancelled) with every message it had produced.
    - pydantic-ai's ``conversation_id`` of the run defaults to the chatmemory conversation id.

    Args:
        chat: the principal's scope; the conversation must be visible to it.
        conversation_id: the chatmemory conversation to record into.
        metadata: added to every history's metadata.
        autoload: load the conversation when the run gets no ``message_history``.

    Raises:
        ConversationNotFound: (from the run) the conversation is not visible to ``chat``.
    """

    chat: Scope
    conversation_id: UUID | str
    _: KW_ONLY
    metadata: Mapping[str, JsonValue] | None = None
    autoload: bool = True
    id: str | None = "chatmemory"
    _live: list[ModelMessage] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def get_serialization_name(cls) -> str | None:
        """``None``: it holds a live store, so it cannot be built from an agent spec."""
        return None

    async def for_run(self, ctx: RunContext[Any]) -> ChatMemoryCapability:
        """A fresh copy per run, so concurrent runs of one agent keep their own state."""
        return replace(self)

    def get_default_conversation_id(self, run_id: str) -> str | None:
        """The chatmemory conversation id, for runs without one of their own."""
        return str(self.conversation_id)

    async def wrap_run(self, ctx: RunContext[Any], *, handler: WrapRunHandler) -> AgentRunResult[Any]:
        """Load the conversation before the run and record the run after it, however it ends."""
        if self.autoload and not ctx.messages:
            ctx.messages[:0] = await load_messages(self.chat, self.conversation_id)
        else:
            await self.chat.get_conversation(self.conversation_id)  # fail before any model call
        try:
            result = await handler()
        except BaseException as exc:
            await self._record_failure(ctx, exc)
            raise
        await self._record(ctx, result.all_messages(), result.new_messages(), "completed")
        return result

    async def before_model_request(
        self, ctx: RunContext[Any], request_context: ModelRequestContext
    ) -> ModelRequestContext:
        """Remember the run's live message list, which a failure leaves behind."""
        self._live = ctx.messages
        return request_context

    async def after_node_run(
        self, ctx: RunContext[Any], *, node: AgentNode[Any], result: NodeResult[Any]
    ) -> NodeResult[Any]:
        """Remember the run's live message list, which a failure leaves behind."""
        self._live = ctx.messages
        return result

    async def _record_failure(self, ctx: RunContext[Any], exc: BaseException) -> None:
        # The context handed to wrap_run keeps the list the run started with; the run replaces it
        # with its own once it starts, and that one is only seen from the later hooks.
        seen = self._live if self._live is not None else []
        new = [m for m in seen if m.run_id == ctx.run_id]
        status: Literal["failed", "cancelled"] = (
            "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
        )
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        try:
            # Shielded: under a cancelled anyio scope every await would be cancelled again.
            with anyio.CancelScope(shield=True):
                await self._record(ctx, seen, new, status, error=error)
        except ChatMemoryError:
            # The run's own error is what the caller must see; the store's goes to the log.
            _log.exception(
                "could not record the failed run %s in conversation %s", ctx.run_id, self.conversation_id
            )

    async def _record(
        self,
        ctx: RunContext[Any],
        seen: Sequence[ModelMessage],
        new: Sequence[ModelMessage],
        status: Literal["completed", "failed", "cancelled"],
        *,
        error: str | None = None,
    ) -> None:
        metadata: dict[str, JsonValue] = {
            **(self.metadata or {}),
            "framework": NATIVE_FORMAT,
            "framework_version": pydantic_ai.__version__,
            "run_id": ctx.run_id,
            "model_id": ctx.model.model_id,
        }
        batch = to_new_messages(new)  # malformed content fails here, before anything is written
        history = await self.chat.start_history(
            self.conversation_id,
            model=ctx.model.model_name,
            system_prompts=system_prompts(seen, new),
            metadata=metadata,
        )
        try:
            for start in range(0, len(batch), _BATCH):
                await self.chat.append_messages(history.id, batch[start : start + _BATCH])
        except ChatMemoryError as exc:
            # Never leave a history running that no one will finish.
            note = f"messages not recorded: {exc}"[:_ERROR_CHARS]
            await self.chat.finish_history(history.id, status="failed", error=note)
            raise
        usage = usage_dict(ctx.usage) or None
        await self.chat.finish_history(history.id, status=status, usage=usage, error=error)
