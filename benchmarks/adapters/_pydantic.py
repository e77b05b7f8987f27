"""pydantic-ai: ``ChatMemoryCapability`` beside ``message_history`` kept in a JSON file.

pydantic-ai has no store of its own; its documented way to keep a conversation is to dump
``result.all_messages()`` with ``ModelMessagesTypeAdapter`` and pass them back as
``message_history`` on the next run. A turn here does exactly that: read and validate the
file, run, write the file (no fsync, as ``Path.write_bytes`` does).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._data import MODEL, Msg
from benchmarks._targets import Store
from benchmarks.adapters._seed import REPLY, import_turns
from chatmemory import ChatMemory, Principal
from chatmemory.scope import Scope

FRAMEWORK = "pydantic-ai"
INSTRUCTIONS = "Be brief."


def _model_messages(messages: Sequence[Msg]) -> list[Any]:
    from pydantic_ai import messages as pai

    return [
        pai.ModelRequest(parts=[pai.UserPromptPart(m.text)])
        if m.role == "user"
        else pai.ModelResponse(parts=[pai.TextPart(m.text)], model_name=MODEL)
        for m in messages
    ]


class _PydanticTurns:
    """An agent on pydantic-ai's ``FunctionModel`` that answers every request alike and counts
    the messages it was sent."""

    def __init__(self) -> None:
        self.seen = 0

    def _model(self) -> Any:
        from pydantic_ai.messages import ModelResponse, TextPart
        from pydantic_ai.models.function import FunctionModel

        def respond(messages: list[Any], info: Any) -> Any:
            self.seen = len(messages)
            return ModelResponse(parts=[TextPart(REPLY)])

        return FunctionModel(respond, model_name=MODEL)

    async def stop(self) -> None:
        pass


class CapabilityTurns(_PydanticTurns):
    """``Agent(..., capabilities=[ChatMemoryCapability(chat, conversation_id)])``, one per conversation."""

    async def start(self, store: Store) -> None:
        self._memory = await ChatMemory.open(store.url)
        self._chat: Scope = self._memory.scoped(Principal("w6"))

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        from chatmemory_pydantic_ai import ChatMemoryCapability, to_new_messages
        from pydantic_ai import Agent

        native = to_new_messages(_model_messages(messages))
        conversation_id = await import_turns(
            self._chat,
            [native[i : i + 2] for i in range(0, len(native) - 1, 2)],
            model=MODEL,
            metadata={"framework": FRAMEWORK},
            system_prompts=[INSTRUCTIONS],
        )
        return Agent(
            self._model(),
            instructions=INSTRUCTIONS,
            capabilities=[ChatMemoryCapability(self._chat, conversation_id)],
        )

    async def turn(self, agent: Any, text: str) -> int:
        await agent.run(text)
        return self.seen

    async def stop(self) -> None:
        await self._memory.close()


class JsonFileTurns(_PydanticTurns):
    """``message_history`` read from and written back to a JSON file each turn."""

    async def start(self, store: Store) -> None:
        from pydantic_ai import Agent

        self._directory = tempfile.TemporaryDirectory(prefix="chatmemory-bench-w6-")
        self._agent: Any = Agent(self._model(), instructions=INSTRUCTIONS)

    async def conversation(self, messages: Sequence[Msg]) -> Any:
        from pydantic_ai.messages import ModelMessagesTypeAdapter

        path = Path(self._directory.name) / f"{uuid.uuid4().hex}.json"
        path.write_bytes(ModelMessagesTypeAdapter.dump_json(_model_messages(messages)))
        return path

    async def turn(self, path: Path, text: str) -> int:
        from pydantic_ai.messages import ModelMessagesTypeAdapter

        # Plain blocking file calls, as the recipe has them: a thread hop would add to the store's cost.
        history = ModelMessagesTypeAdapter.validate_json(path.read_bytes())  # noqa: ASYNC240
        result = await self._agent.run(text, message_history=history)
        path.write_bytes(ModelMessagesTypeAdapter.dump_json(result.all_messages()))  # noqa: ASYNC240
        return self.seen

    async def stop(self) -> None:
        self._directory.cleanup()
