"""Which model produced an assistant message, seen through LlamaIndex instrumentation.

A ``ChatMessage`` carries no model name and a chat store never sees the LLM. The LLM's
start event does carry it (``model_dict["model_name"]``, with the system prompt among its
messages), and the end event's ``response.message`` is the very object the agent later
hands to its memory. So one event handler on the root dispatcher remembers, per response
message object, the model and system prompts of the call that produced it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index_instrumentation import get_dispatcher
from pydantic import PrivateAttr

from chatmemory.recording import model_label

__all__ = ["Produced", "observe"]

_REMEMBERED = 1024  # response messages not yet stored; older ones are forgotten first


@dataclass(frozen=True, slots=True)
class Produced:
    """The LLM call behind one assistant message."""

    model: str
    """As the store keeps it (``model_label``)."""
    system_prompts: list[str]


class _ModelProvenance(BaseEventHandler):
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: OrderedDict[str, Produced] = PrivateAttr(default_factory=OrderedDict)
    # Keeps the message object itself, so its id() cannot be reused while it is remembered.
    _messages: OrderedDict[int, tuple[ChatMessage, Produced]] = PrivateAttr(default_factory=OrderedDict)

    @classmethod
    def class_name(cls) -> str:
        """The handler's name."""
        return "ChatMemoryModelProvenance"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Remember the model of each chat call and, at its end, of the message it returned."""
        if isinstance(event, LLMChatStartEvent):
            name = event.model_dict.get("model_name")
            name = model_label(name) if isinstance(name, str) else None
            if name is None:
                return
            system = [m.content for m in event.messages if m.role == MessageRole.SYSTEM]
            produced = Produced(name, [s for s in system if isinstance(s, str) and s])
            with self._lock:
                _put(self._calls, str(event.span_id), produced)
        elif isinstance(event, LLMChatEndEvent) and event.response is not None:
            message = event.response.message
            with self._lock:
                seen = self._calls.pop(str(event.span_id), None)
                if seen is not None:
                    _put(self._messages, id(message), (message, seen))

    def produced(self, message: ChatMessage) -> Produced | None:
        """The call that returned ``message``, if one was seen."""
        with self._lock:
            hit = self._messages.get(id(message))
        return hit[1] if hit is not None and hit[0] is message else None


def _put(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _REMEMBERED:
        cache.popitem(last=False)


_HANDLER = _ModelProvenance()
_REGISTER = threading.Lock()


def observe() -> _ModelProvenance:
    """The process-wide handler, added to the root dispatcher on first use."""
    with _REGISTER:
        root = get_dispatcher()
        if not any(h is _HANDLER for h in root.event_handlers):
            root.add_event_handler(_HANDLER)
    return _HANDLER
