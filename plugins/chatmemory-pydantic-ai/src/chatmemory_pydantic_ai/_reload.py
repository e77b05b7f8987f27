"""chatmemory messages back to pydantic-ai messages, and what a run resumes from."""

from __future__ import annotations

import base64
import bisect
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic_ai import messages as pai

from chatmemory import (
    AudioPart,
    ChatMemoryError,
    ConflictError,
    FilePart,
    History,
    HistoryNotFound,
    ImagePart,
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.recording import ABANDONED, LIVE_HISTORIES, abandoned
from chatmemory.scope import Scope
from chatmemory_pydantic_ai._convert import NATIVE_FORMAT
from chatmemory_pydantic_ai._recorder import RECORDING, settled

__all__ = ["ConversationCache", "load_messages", "to_model_messages"]

_log = logging.getLogger(__name__)
_FIRST_PAGE = 8  # a run or two of this process, usually all that is new: read (and decode) no more
_PAGE = 50

Place = tuple[datetime, UUID, int]


async def load_messages(chat: Scope, conversation_id: UUID | str) -> list[pai.ModelMessage]:
    """A conversation as the ``message_history`` to resume it from, as pydantic-ai keeps it.

    Every history counts, whatever its status: a failed or cancelled run keeps what it
    produced, as ``RunCancelled.all_messages()`` does (an interrupted request with the finished
    tools' results; pydantic-ai synthesises returns for the calls that never finished). When
    the conversation ends on tool calls a failed, cancelled or abandoned run never answered,
    they are closed out with ``repair_messages``, as pydantic-ai asks before a new prompt.
    Histories follow each other in the order they started. A history left ``running`` by a
    process on this host that is gone is marked ``failed`` first.

    Raises:
        ConversationNotFound: the principal of ``chat`` sees no conversation with this id.
    """
    return await ConversationCache().load(chat, conversation_id)


def to_model_messages(stored: Iterable[Message]) -> list[pai.ModelMessage]:
    """pydantic-ai messages from stored ones: exactly as recorded when ``native`` is pydantic-ai's
    (converted in one pass), rebuilt from the neutral ``parts`` when another writer stored them."""
    stored = list(stored)
    native = [m.native.data for m in stored if _is_native(m)]  # type: ignore[union-attr]
    converted = iter(pai.ModelMessagesTypeAdapter.validate_python(native) if native else ())
    out: list[pai.ModelMessage] = []
    tool_names: dict[str, str] = {}
    for message in stored:
        out.append(next(converted) if _is_native(message) else _from_parts(message, tool_names))
        if isinstance(out[-1], pai.ModelResponse):
            tool_names.update((c.tool_call_id, c.tool_name) for c in out[-1].tool_calls)
    return out


def _is_native(message: Message) -> bool:
    return message.native is not None and message.native.format == NATIVE_FORMAT


@dataclass
class ConversationCache:
    """What one capability has read of its conversation, so each later run reads only the
    messages stored since, from the newest end. It falls back to a full read when the newest
    message it knows is gone or was never read, or when it read a message still pending behind
    newer ones (completing it changes nothing at the newest end). Messages read later take the
    place a full read gives them (their history's, then their own), so runs recorded side by
    side never come interleaved."""

    messages: list[pai.ModelMessage] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)
    """Each message's place in a full read: its history's start and id, then its ``seq``."""
    starts: dict[UUID, datetime] = field(default_factory=dict)
    last: tuple[int, UUID] | None = None
    status: dict[UUID, str] = field(default_factory=dict)
    loaded: bool = False
    pending_behind: bool = False
    """A message read ``pending`` is older than the newest message read: reads from the newest
    end never go back to it, so once completed only a full read gives it."""

    async def load(
        self, chat: Scope, conversation_id: UUID | str, *, new_prompt: bool = True
    ) -> list[pai.ModelMessage]:
        """The conversation to resume from (see ``load_messages``); for a run without a
        ``new_prompt``, the calls a finished run left unanswered stay open, for the run to make.

        Raises:
            ConversationNotFound: the conversation is not visible to ``chat``.
        """
        # Concurrent runs share this cache: work on a snapshot, then swap it in at once.
        last, status, starts = self.last, dict(self.status), dict(self.starts)
        base, places = list(self.messages), list(self.places)
        histories: Sequence[History] = []
        incremental = self.loaded and not self.pending_behind
        newer = await self._newer(chat, conversation_id, last) if incremental else None
        read: Sequence[Message] = newer or ()
        if newer is not None:
            ids = {m.history_id for m in newer}
            unknown = {h for h in ids if h not in starts or status.get(h, "running") == "running"}
            # Read as running before and not recorded here: a run that fails, is cancelled or
            # whose process dies stores no message to say so.
            unknown |= {h for h, s in status.items() if s == "running" and h not in LIVE_HISTORIES}
            try:
                histories = [await chat.get_history(h, messages=False) for h in sorted(unknown)]
            except HistoryNotFound:
                histories, newer = [], None  # deleted with its messages: read everything again
            stored = [m for m in newer or () if m.status == "complete"]
            if newer is not None and _completed_after_calls(histories, stored):
                newer = None
        if newer is None:
            detail = await chat.get_conversation(conversation_id, messages=True)
            histories = detail.histories
            read = [m for h in detail.histories for m in h.messages or ()]
            stored = [m for m in read if m.status == "complete"]
            base, places, status, starts = [], [], {}, {}
        for history in histories:
            starts[history.id] = history.created_at
            status[history.id] = await self._close_if_abandoned(chat, history)
        if stored:
            # Histories come in the order they started, so the newest message is not always last.
            newest = max(stored, key=lambda m: m.seq)
            last = (newest.seq, newest.id)
            _place(base, places, stored, to_model_messages(stored), starts)
        self.messages, self.places, self.starts, self.status, self.last = base, places, starts, status, last
        # Pending messages are left out, as a full read leaves them out; one newer than every
        # message kept is read again next time (reads start after the newest kept message).
        self.pending_behind = last is not None and any(
            m.status == "pending" and m.seq < last[0] for m in read
        )
        self.loaded = True
        return self._resumable(new_prompt)

    def finished(self, history_id: UUID, status: str, started_at: datetime | None) -> None:
        """Note how a history this process recorded ended, and when it started."""
        self.status[history_id] = status
        if started_at is not None:
            self.starts[history_id] = started_at

    async def _newer(
        self, chat: Scope, conversation_id: UUID | str, last: tuple[int, UUID] | None
    ) -> list[Message] | None:
        """The messages stored since the newest one read, oldest first; ``None`` when that one
        is gone (a full read is then needed)."""
        newer: list[Message] = []
        cursor: str | None = None
        while True:
            page = await chat.list_messages(
                conversation_id=conversation_id,
                newest_first=True,
                limit=chat.limits.page_size(_PAGE if cursor else _FIRST_PAGE),
                cursor=cursor,
            )
            for message in page.items:
                if last is not None and message.seq <= last[0]:
                    found = (message.seq, message.id) == last
                    return newer[::-1] if found else None
                newer.append(message)
            if not page.has_more:
                return newer[::-1] if last is None else None
            cursor = page.next_cursor

    async def _close_if_abandoned(self, chat: Scope, history: History) -> str:
        recording = (history.metadata or {}).get("run_id") in RECORDING
        if recording or not abandoned(history, framework=NATIVE_FORMAT):
            return history.status
        try:
            await settled(chat.finish_history(history.id, status="failed", error=ABANDONED))
        except ConflictError:
            return history.status  # its run ended after the read: it was not abandoned
        except ChatMemoryError:
            _log.exception("could not close the abandoned history %s", history.id)
            return history.status
        return "failed"

    def _resumable(self, new_prompt: bool) -> list[pai.ModelMessage]:
        out = list(self.messages)
        last = out[-1] if out else None
        dangling = isinstance(last, pai.ModelResponse) and bool(last.tool_calls)
        tail = self.places[-1][1] if self.places else None
        status = self.status.get(tail or UUID(int=0))
        if dangling and status != "completed" and (new_prompt or status == "running"):
            # A completed run ending on tool calls waits for deferred results. Any other run's
            # calls are never answered by that run, and pydantic-ai refuses a new prompt after
            # them; a run without one makes them itself (or takes their deferred results), as
            # from pydantic-ai's own messages, unless their run is still going.
            out[-1:] = pai.repair_messages(out[-1:])
        return out


def _completed_after_calls(histories: Sequence[History], stored: list[Message]) -> bool:
    """Whether a history read ``completed`` ends, as far as ``stored`` goes, on a response calling
    tools. Its status was read after its messages: its run may have ended in between, after
    messages this read missed, and its calls would then be left open as a completed run's
    deferred ones (pydantic-ai refuses a new prompt after them). A full read gives a history's
    messages and status at once."""
    completed = {h.id for h in histories if h.status == "completed"}
    newest = {m.history_id: m for m in stored if m.history_id in completed}  # in seq order: the last wins
    return any(any(isinstance(p, ToolCallPart) for p in m.parts or ()) for m in newest.values())


def _place(
    messages: list[pai.ModelMessage],
    places: list[Place],
    stored: list[Message],
    converted: list[pai.ModelMessage],
    starts: dict[UUID, datetime],
) -> None:
    """Add ``converted`` (of ``stored``) to ``messages`` where a full read puts them: histories
    in the order they started, each history's messages in ``seq`` order."""
    new = sorted(
        zip(((starts[m.history_id], m.history_id, m.seq) for m in stored), converted, strict=True),
        key=lambda entry: entry[0],
    )
    for place, message in new:
        at = len(places) if not places or places[-1] <= place else bisect.bisect_right(places, place)
        places.insert(at, place)
        messages.insert(at, message)


def _from_parts(message: Message, tool_names: dict[str, str]) -> pai.ModelMessage:
    parts = message.parts if message.parts is not None else [TextPart(text=message.content)]
    if message.role == "assistant":
        response: list[pai.ModelResponsePart] = []
        for part in parts:
            if isinstance(part, TextPart):
                response.append(pai.TextPart(part.text))
            elif isinstance(part, ReasoningPart):
                response.append(pai.ThinkingPart(part.text))
            elif isinstance(part, ToolCallPart):
                response.append(pai.ToolCallPart(part.name, part.arguments, tool_call_id=part.id))
        return pai.ModelResponse(parts=response, model_name=message.model)
    if message.role == "system":
        return pai.ModelRequest(parts=[pai.SystemPromptPart(message.content)])
    request: list[pai.ModelRequestPart] = []
    user: list[pai.UserContent] = []
    for part in parts:
        if isinstance(part, ToolResultPart):
            name = tool_names.get(part.call_id, "")
            outcome: Literal["success", "failed"] = "failed" if part.is_error else "success"
            request.append(pai.ToolReturnPart(name, part.content, tool_call_id=part.call_id, outcome=outcome))
        elif isinstance(part, TextPart):
            user.append(part.text)
        elif isinstance(part, ImagePart | AudioPart | FilePart):
            user.append(_media(part))
    if user:
        content: str | list[pai.UserContent] = (
            user[0] if len(user) == 1 and isinstance(user[0], str) else user
        )
        request.append(pai.UserPromptPart(content))
    return pai.ModelRequest(parts=request)


def _media(part: ImagePart | AudioPart | FilePart) -> pai.UserContent:
    if part.data is not None:
        return pai.BinaryContent(base64.b64decode(part.data), media_type=part.media_type or "")
    url = part.url or ""
    if isinstance(part, ImagePart):
        return pai.ImageUrl(url)
    if isinstance(part, AudioPart):
        return pai.AudioUrl(url)
    return pai.DocumentUrl(url)
