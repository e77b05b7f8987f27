"""An ADK plugin telling the session service which model and system prompt each agent uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.adk.agents.callback_context import CallbackContext
from google.adk.agents.invocation_context import InvocationContext
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.plugins.base_plugin import BasePlugin
from google.genai import types

from chatmemory.recording import run_error

if TYPE_CHECKING:
    from chatmemory_adk.service import ChatMemorySessionService

__all__ = ["ProvenancePlugin"]

_ERROR_CHARS = 10_000  # of a failed run's error recorded: the store takes no more than 100,000


class ProvenancePlugin(BasePlugin):
    """Records the model each agent calls (and its system prompt) for ``service``.

    ADK hands a session service only events, and an event names its model only when the
    model reports one (``model_version``). With this plugin on the ``Runner``
    (``plugins=[ProvenancePlugin(service)]``), an agent's events without one are recorded
    as produced by the agent's model, and each invocation's history gets its model and
    system prompt. Events themselves are left exactly as ADK made them.
    """

    def __init__(self, service: ChatMemorySessionService) -> None:
        super().__init__(name="chatmemory_provenance")
        self._service = service

    async def before_model_callback(
        self, *, callback_context: CallbackContext, llm_request: LlmRequest
    ) -> LlmResponse | None:
        if llm_request.model:
            self._service.note_model_call(
                callback_context.invocation_id,
                callback_context.agent_name,
                llm_request.model,
                _text(llm_request.config.system_instruction if llm_request.config else None),
            )
        return None

    async def after_run_callback(self, *, invocation_context: InvocationContext) -> None:
        await self._service.finish_invocation(invocation_context.invocation_id)

    async def on_run_error_callback(self, *, invocation_context: InvocationContext, error: Exception) -> None:
        await self._service.finish_invocation(
            invocation_context.invocation_id, status="failed", error=run_error(error, limit=_ERROR_CHARS)
        )


def _text(instruction: object) -> str | None:
    if isinstance(instruction, str):
        return instruction or None
    if isinstance(instruction, types.Content):
        text = "".join(p.text or "" for p in instruction.parts or [])
        return text or None
    if isinstance(instruction, list):
        text = "\n".join(t for t in map(_text, instruction) if t)
        return text or None
    if isinstance(instruction, types.Part):
        return instruction.text or None
    return None
