"""For adapters that record runs as they go: telling a run whose recorder is gone from a live one.

An adapter records a run into a ``running`` history message by message, so a process killed
mid-run leaves its history ``running``. Stamping the history with :func:`recorder_metadata`
and registering it in :data:`LIVE_HISTORIES` while the run lasts lets a later run, on the same
host, close it: :func:`abandoned` is true once the recording process is gone. Histories
recorded on other hosts are never judged (their processes cannot be seen from here).

A history a run of this process has just started is registered only once its start returns:
until then the run counts as :func:`starting` in its conversation, and a run that has read the
history asks :func:`starting_in` before taking it for abandoned.

A run's writes are awaited with :func:`settled`, so a cancelled run never leaves them half
done, and a history closed by an error says what stopped it (:func:`run_error`).

A framework accepts messages larger than the store's limits (a long answer, a phone photo).
An adapter keeps each message whole in its native form and passes it through :func:`fitted`,
which cuts only the neutral content down to the limits, so the run is recorded, not refused;
a model name the store would refuse (blank, or longer than it takes) goes through
:func:`model_label`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

from pydantic_core import PydanticSerializationError, to_jsonable_python

from chatmemory._db import settle
from chatmemory._validation import MODEL_CHARS, check_object
from chatmemory.content import ContentPart, TextPart, ToolResultPart, inline_size
from chatmemory.errors import InvalidInputError
from chatmemory.limits import Limits
from chatmemory.models import History, Message, NewMessage

__all__ = [
    "ABANDONED",
    "LIVE_HISTORIES",
    "abandoned",
    "added_metadata",
    "fitted",
    "json_copy",
    "key_text",
    "model_label",
    "native_message",
    "storable",
    "recorder_metadata",
    "restored",
    "run_error",
    "settled",
    "starting",
    "starting_in",
]

T = TypeVar("T")

ABANDONED = "the process recording this run stopped before the run ended"
"""The error an adapter records when it closes an abandoned history."""

LIVE_HISTORIES: set[UUID] = set()
"""Histories this process is recording right now."""

_HOST = socket.gethostname()
_STARTS: collections.Counter[str] = collections.Counter()  # emptied as starts end
_STARTS_GUARD = threading.Lock()


def added_metadata(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """What an adapter is told to add to the metadata of every history it starts (a copy),
    checked when the adapter is made: a value no history could store fails there, at once,
    rather than every run the adapter records.

    Raises:
        InvalidInputError: ``value`` is not a JSON object (``field`` is ``"metadata"``).
    """
    return check_object("metadata", value) or {}


def recorder_metadata() -> dict[str, str | int]:
    """History metadata naming where the recording process runs (``host`` and ``pid``)."""
    return {"host": _HOST, "pid": os.getpid()}


def recorded_here(history: History) -> bool:
    """Whether this process recorded ``history`` (its metadata's ``host`` and ``pid``, as
    :func:`recorder_metadata` puts them)."""
    meta = history.metadata or {}
    return all(meta.get(name) == value for name, value in recorder_metadata().items())


def abandoned(history: History, *, framework: str) -> bool:
    """Whether ``history`` is a running history of ``framework`` (its ``metadata["framework"]``)
    left behind by a process on this host that is gone, or by this process outside any run it
    is recording."""
    meta = history.metadata or {}
    if history.status != "running" or meta.get("framework") != framework or meta.get("host") != _HOST:
        return False
    pid = meta.get("pid")
    if not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return history.id not in LIVE_HISTORIES
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # Alive, under another user.
        return False
    return False


def run_error(error: BaseException, *, limit: int = 10_000) -> str:
    """The error recorded for a run that ``error`` stopped: its type and message, at most
    ``limit`` characters. A cancellation carrying no message of its own (none, or an object
    that is not text) says what it stopped."""
    detail = str(error)
    message = error.args[0] if error.args else None
    if isinstance(error, asyncio.CancelledError) and not (isinstance(message, str) and message):
        # No message, or an object that is none (LangGraph cancels its tasks with a sentinel).
        detail = "the task running the agent was cancelled"
    return f"{type(error).__name__}: {detail}"[:limit]


async def settled(work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` (a run's writes) to its end even when the caller is cancelled meanwhile,
    however often; the cancellation then goes on, whatever the work's outcome, so a cancelled
    caller never leaves writes half done and is never told of their failure instead.

    Never waits longer than the work: a store closed meanwhile fails it at its next call.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await settle(task)
        raise


@contextlib.contextmanager
def starting(conversation_id: UUID | str) -> Iterator[None]:
    """Around a run's start of a history in the conversation, until the run has registered it
    (in :data:`LIVE_HISTORIES` or the adapter's own record of the runs it holds)."""
    key = _conversation_key(conversation_id)
    with _STARTS_GUARD:
        _STARTS[key] += 1
    try:
        yield
    finally:
        with _STARTS_GUARD:
            _STARTS[key] -= 1
            if not _STARTS[key]:
                del _STARTS[key]


def starting_in(conversation_id: UUID | str) -> bool:
    """Whether a run of this process is starting a history in the conversation. Asked after
    reading a history, a ``False`` means its run, if of this process, has registered it."""
    with _STARTS_GUARD:
        return bool(_STARTS[_conversation_key(conversation_id)])


def _conversation_key(conversation_id: UUID | str) -> str:
    try:
        return str(UUID(str(conversation_id)))
    except ValueError:
        return str(conversation_id)


def fitted(message: NewMessage, limits: Limits) -> NewMessage:
    """``message`` with its neutral content cut to fit ``limits``, for a message whose native
    form keeps the whole of it (each adapter's does): ``message`` itself when it fits.

    Inline data over ``limits.inline_bytes`` becomes a text part naming what it was. When the
    flattened text is over ``limits.content``, the longest texts (of text parts and tool
    results) are cut first, each keeping its beginning and ending with a note of how many
    characters it lost, so the shorter ones stay whole. Everything else is kept: tool calls and
    their ids, reasoning, media within the limit, and every other field of the message. When
    there are so many texts that the newlines joining them would fill half the limit, each run
    of adjacent text parts becomes one part first. Texts that are not adjacent (tool results,
    text parts between other parts) stay apart, so a message with more of them than the limit
    has characters cannot be fitted.
    """
    content = message.content
    if isinstance(content, str):
        if len(content) <= limits.content:
            return message
        (text,) = _clipped([content], limits.content)
        return message.model_copy(update={"content": text})
    parts = content
    if any(inline_size(part) > limits.inline_bytes for part in parts):
        parts = [_fitted_media(part, limits.inline_bytes) for part in parts]
    texts = [text for text in map(_text_of, parts) if text is not None]
    if len(texts) > limits.content // 2 and sum(map(len, texts)) + len(texts) - 1 > limits.content:
        # The newlines joining so many texts would take most of the limit, or more than all of
        # it: adjacent text parts become one, of the same text, which can then be cut.
        parts = _joined(parts)
        texts = [text for text in map(_text_of, parts) if text is not None]
    clipped = _clipped(texts, limits.content)
    if clipped is not texts:
        cut = iter(clipped)
        parts = [part if _text_of(part) is None else _with_text(part, next(cut)) for part in parts]
    return message if parts is content else message.model_copy(update={"content": parts})


def _joined(parts: Sequence[ContentPart]) -> list[ContentPart]:
    """``parts`` with each run of adjacent text parts made one, their texts joined with newlines
    (so the message's flattened text is the same)."""
    joined: list[ContentPart] = []
    run: list[str] = []
    for part in [*parts, None]:
        if isinstance(part, TextPart):
            run.append(part.text)
            continue
        if run:
            joined.append(TextPart(text="\n".join(run)))
            run = []
        if part is not None:
            joined.append(part)
    return joined


def _fitted_media(part: ContentPart, inline_bytes: int) -> ContentPart:
    size = inline_size(part)
    if size <= inline_bytes:
        return part
    kind = getattr(part, "media_type", None) or part.type
    return TextPart(
        text=f"[{part.type} ({kind}, {size:,} bytes) over the store's {inline_bytes:,}-byte inline "
        "limit: kept in this message's native form only]"
    )


def _text_of(part: ContentPart) -> str | None:
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ToolResultPart):
        return part.content
    return None


def _with_text(part: ContentPart, text: str) -> ContentPart:
    if text == _text_of(part):
        return part
    return part.model_copy(update={"text" if isinstance(part, TextPart) else "content": text})


def _clipped(texts: list[str], limit: int) -> list[str]:
    """``texts`` cut so that, joined with newlines, they are at most ``limit`` characters: all
    longer than some length are cut to it, the others kept whole (``texts`` itself when they fit)."""
    budget = limit - max(len(texts) - 1, 0)  # the newlines between them
    if sum(map(len, texts)) <= budget:
        return texts
    lengths = sorted(map(len, texts))
    cap = 0
    for i, length in enumerate(lengths):
        rest = len(lengths) - i  # those as long as this one or longer, all cut to ``cap``
        if length * rest > budget:
            cap = max(budget, 0) // rest
            break
        budget -= length
    return [text if len(text) <= cap else _cut(text, cap) for text in texts]


def _cut(text: str, cap: int) -> str:
    """The beginning of ``text``, with a note of what was cut, in at most ``cap`` characters."""
    longest = len(_note(len(text)))
    if cap < longest:
        return text[:cap]
    keep = cap - longest
    return text[:keep] + _note(len(text) - keep)


def _note(cut: int) -> str:
    return f"\n[{cut:,} more characters in this message's native form]"


def key_text(text: str, limit: int) -> str:
    """``text`` as a message key holds it: itself when at most ``limit`` characters, else
    ``"sha256:"`` and its digest (71 characters), for free-form ids longer than keys may be."""
    if len(text) <= limit:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def model_label(name: str | None) -> str | None:
    """``name`` as the store keeps a model name: ``None`` when it is blank, and one longer than
    the store takes (a model served from a long local path, a deployment's full ARN, a fallback
    chain of several) shortened in its middle, its start and its end kept, so that the run is
    recorded rather than refused. A message's native form keeps the name whole."""
    if name is None or not name.strip():
        return None
    if len(name) <= MODEL_CHARS:
        return name
    head = (MODEL_CHARS - 1) // 2
    return f"{name[:head]}…{name[len(name) - (MODEL_CHARS - 1 - head) :]}"


def native_message(fields: Mapping[str, Any], native_format: str, data: Any) -> NewMessage:
    """``NewMessage(**fields)`` keeping ``data`` as its native form, for a message its framework
    took: what the store cannot hold as it is, it holds with a stand-in, rather than fail the run.

    - A float JSON cannot hold (NaN, an infinity: a logprob of -inf, which a framework's own
      stores keep) becomes null.
    - A NUL character or a lone surrogate in any text (a tool's output read from a binary file,
      a file name decoded with ``surrogateescape``), which neither backend can store as text,
      becomes U+FFFD, the replacement character, in both forms.

    Raises:
        InvalidInputError: the message cannot be stored all the same (JSON nested too deeply).
    """
    try:
        return NewMessage(**fields, native={"format": native_format, "data": data})
    except InvalidInputError as refused:
        try:
            fields, data = storable(dict(fields)), storable(data)
            return NewMessage(**fields, native={"format": native_format, "data": data})
        except (InvalidInputError, PydanticSerializationError, RecursionError):
            raise refused from None


def json_copy(value: Any) -> Any:
    """A copy of JSON data (a stored message's native form, say) sharing none of its dicts and
    lists: a framework object built from the copy may be changed in place without changing
    the stored message, which an adapter keeps and may store again."""
    kind = type(value)
    if kind is dict:
        return {k: json_copy(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    if kind is list:
        return [json_copy(v) if type(v) in _CONTAINERS else v for v in value]
    return value


_CONTAINERS = frozenset({dict, list})


def restored(message: Message, *, key: str | None = None) -> NewMessage:
    """``message`` as it is stored again unchanged (in another history, or in its own place
    with ``key``)."""
    return NewMessage(
        role=message.role,
        content=message.parts if message.parts is not None else message.content,
        model=message.model,
        usage=message.usage,
        metadata=message.metadata,
        native=message.native,
        key=key,
    )


def storable(value: Any, *, fallback: Callable[[Any], Any] | None = None) -> Any:
    """``value`` as JSON the store holds: NaN and infinities null, NUL characters and lone
    surrogates in its texts (keys too) U+FFFD; a value with no JSON form given to ``fallback``.

    Raises:
        PydanticSerializationError: a value has no JSON form and there is no ``fallback``.
    """
    return _texts_replaced(to_jsonable_python(value, fallback=fallback, inf_nan_mode="null"))


def _texts_replaced(value: Any) -> Any:
    if isinstance(value, str):
        return _replaced(value)
    if isinstance(value, dict):
        return {_replaced(k) if isinstance(k, str) else k: _texts_replaced(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_texts_replaced(item) for item in value]
    return value


def _replaced(text: str) -> str:
    text = text.replace("\x00", "\ufffd")
    if text.isascii():
        return text
    # Through UTF-16: two surrogates that make a pair join, a lone one becomes U+FFFD.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
