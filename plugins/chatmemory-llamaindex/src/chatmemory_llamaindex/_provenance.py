"""Which model produced an assistant message, and which agent run put a message, seen
through LlamaIndex instrumentation.

A ``ChatMessage`` carries no model name and a chat store never sees the LLM. The LLM's
start event does carry it (``model_dict["model_name"]``, with the system prompt among its
messages), and the end event's ``response.message`` is the very object the agent later
hands to its memory. So one event handler on the root dispatcher remembers, per response
message object, the model and system prompts of the call that produced it.

Nor does a chat store see an agent run begin or end. A workflow run (an agent's ``run``)
is a span, though, entered with the workflow as its instance and an id ``"<Class>.run-…"``,
and every step, tool and LLM call of the run is a span under it; the span active when
memory is written is one of them. So a span handler on the root dispatcher maps each open
span to the innermost workflow run it belongs to, remembers each run's latest LLM call, and
how each run ended (its span exited, or was dropped with an error).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.workflow import Workflow
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.span import active_span_id
from pydantic import PrivateAttr

from chatmemory.recording import model_label, run_error

__all__ = ["Ended", "Produced", "observe"]

_REMEMBERED = 1024  # response messages not yet stored; older ones are forgotten first
_STOPPED = "the workflow was stopped by its user"
# Open spans followed, and runs with an open history; a span never exited (a history never
# closed) is forgotten once this many are newer.
_OPEN = 16_384
# Ends of runs no history recorded (yet): every workflow of the process ends, the store's or not.
_UNRECORDED = 256


@dataclass(frozen=True, slots=True)
class Produced:
    """The LLM call behind one assistant message."""

    model: str
    """As the store keeps it (``model_label``)."""
    system_prompts: list[str]


@dataclass(frozen=True, slots=True)
class Ended:
    """How a workflow run ended: ``completed``, ``failed`` (with its error) or ``cancelled``."""

    status: Literal["completed", "failed", "cancelled"]
    error: str | None = None


class _Observed:
    """What both handlers learn, shared, under one lock (handlers run on any thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: OrderedDict[str, Produced] = OrderedDict()  # LLM calls under way, by span
        # Keeps the message object itself, so its id() cannot be reused while it is remembered.
        self.messages: OrderedDict[int, tuple[ChatMessage, Produced]] = OrderedDict()
        self.run_of: OrderedDict[str, str] = OrderedDict()  # open span -> its innermost run
        self.latest: OrderedDict[str, Produced] = OrderedDict()  # run -> its latest LLM call
        # Runs a history records that is not closed yet (how many such histories), and how
        # those of them that ended ended: kept until the histories are closed.
        self.watched: OrderedDict[str, int] = OrderedDict()
        self.ended: OrderedDict[str, Ended] = OrderedDict()
        # How the newest runs no history recorded yet ended: a run cancelled while a step still
        # writes its first message ends before its history is begun (``watch`` moves it over).
        self.unrecorded: OrderedDict[str, Ended] = OrderedDict()


class _ModelProvenance(BaseEventHandler):
    _seen: _Observed = PrivateAttr()

    @classmethod
    def class_name(cls) -> str:
        """The handler's name."""
        return "ChatMemoryModelProvenance"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Remember the model of each chat call and, at its end, of the message it returned."""
        seen = self._seen
        if isinstance(event, LLMChatStartEvent):
            name = event.model_dict.get("model_name")
            name = model_label(name) if isinstance(name, str) else None
            if name is None:
                return
            system = [m.content for m in event.messages if m.role == MessageRole.SYSTEM]
            produced = Produced(name, [s for s in system if isinstance(s, str) and s])
            span = str(event.span_id)
            with seen.lock:
                run = seen.run_of.get(span)
                _put(seen.calls, span, produced, _REMEMBERED)
                if run is not None:
                    _put(seen.latest, run, produced, _REMEMBERED)
        elif isinstance(event, LLMChatEndEvent) and event.response is not None:
            message = event.response.message
            with seen.lock:
                call = seen.calls.pop(str(event.span_id), None)
                if call is not None:
                    _put(seen.messages, id(message), (message, call), _REMEMBERED)


class _RunSpans(BaseSpanHandler[Any]):
    _seen: _Observed = PrivateAttr()

    @classmethod
    def class_name(cls) -> str:
        """The handler's name."""
        return "ChatMemoryRunSpans"

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Map the span to its run: itself when it is a workflow's run, else its parent's."""
        seen = self._seen
        with seen.lock:
            if isinstance(instance, Workflow) and id_.startswith(f"{type(instance).__name__}.run-"):
                _put(seen.run_of, id_, id_, _OPEN)
            elif parent_id is not None and (run := seen.run_of.get(parent_id)) is not None:
                _put(seen.run_of, id_, run, _OPEN)

    def span_exit(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> None:
        """Forget the span; a run's span that exits ended the run (without a result: the
        user stopped it)."""
        self._end(id_, Ended("completed") if result is not None else Ended("cancelled", _STOPPED))

    def span_drop(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        """Forget the span; a run's span dropped ended the run with ``err``."""
        if isinstance(err, asyncio.CancelledError):
            ended = Ended("cancelled", run_error(err))
        else:
            ended = Ended("failed", run_error(err) if err is not None else "the run stopped")
        self._end(id_, ended)

    def _end(self, id_: str, ended: Ended) -> None:
        seen = self._seen
        with seen.lock:
            if seen.run_of.pop(id_, None) == id_:
                seen.latest.pop(id_, None)
                if id_ in seen.watched:
                    _put(seen.ended, id_, ended, _OPEN)
                else:
                    _put(seen.unrecorded, id_, ended, _UNRECORDED)

    def new_span(self, *args: Any, **kwargs: Any) -> None:
        """Unused: ``span_enter`` does the work."""

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        """Unused: ``span_exit`` does the work."""

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        """Unused: ``span_drop`` does the work."""


class Observer:
    """What the stores ask of the two handlers."""

    def __init__(self) -> None:
        self._seen = _Observed()
        self.events = _ModelProvenance()
        self.spans = _RunSpans()
        self.events._seen = self.spans._seen = self._seen

    def produced(self, message: ChatMessage) -> Produced | None:
        """The call that returned ``message``, if one was seen."""
        with self._seen.lock:
            hit = self._seen.messages.get(id(message))
        return hit[1] if hit is not None and hit[0] is message else None

    def current_run(self) -> str | None:
        """The workflow run (its span id) the caller runs in, if it runs in one."""
        span = active_span_id.get()
        if span is None:
            return None
        with self._seen.lock:
            return self._seen.run_of.get(span)

    def latest_call(self, run: str) -> Produced | None:
        """The most recent LLM call seen in ``run``."""
        with self._seen.lock:
            return self._seen.latest.get(run)

    def ended(self, run: str) -> Ended | None:
        """How ``run`` ended, if this process saw it end."""
        with self._seen.lock:
            return self._seen.ended.get(run) or self._seen.unrecorded.get(run)

    def watch(self, run: str) -> None:
        """A history records ``run``: keep how it ends until ``release``."""
        seen = self._seen
        with seen.lock:
            _put(seen.watched, run, seen.watched.get(run, 0) + 1, _OPEN)
            ended = seen.unrecorded.pop(run, None)
            if ended is not None:
                _put(seen.ended, run, ended, _OPEN)

    def release(self, run: str) -> None:
        """A history recording ``run`` is closed."""
        with self._seen.lock:
            left = self._seen.watched.pop(run, 0) - 1
            if left > 0:
                _put(self._seen.watched, run, left, _OPEN)
            else:
                self._seen.ended.pop(run, None)

    def running(self, run: str) -> bool:
        """Whether ``run`` is a workflow run this process sees in progress."""
        with self._seen.lock:
            return self._seen.run_of.get(run) == run


def _put(cache: OrderedDict[Any, Any], key: Any, value: Any, most: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > most:
        cache.popitem(last=False)


_OBSERVER = Observer()
_REGISTER = threading.Lock()


def observe() -> Observer:
    """The process-wide observer, its handlers added to the root dispatcher on first use."""
    with _REGISTER:
        root = get_dispatcher()
        if not any(h is _OBSERVER.events for h in root.event_handlers):
            root.add_event_handler(_OBSERVER.events)
        if not any(h is _OBSERVER.spans for h in root.span_handlers):
            root.add_span_handler(_OBSERVER.spans)
    return _OBSERVER
