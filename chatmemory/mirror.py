"""A conversation's messages as last read, kept up to date by one small read each time.

Adapters that hand a framework the whole conversation on every turn keep a
:class:`ConversationMirror` per session, so a turn reads only what changed.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from chatmemory.models import ConversationSummary, Message

if TYPE_CHECKING:
    from chatmemory.scope import Scope

__all__ = ["ConversationMirror", "Handouts", "Mirrored", "Mirrors"]

T = TypeVar("T")
S = TypeVar("S")

_OVERLAP = 1  # newest messages read beyond those expected: the newest mirrored one, if still there


@dataclass(frozen=True)
class _State(Generic[T]):
    ids: tuple[tuple[UUID, int], ...]  # (id, seq) of each live message
    values: tuple[T, ...]  # what each message was converted to
    newest: Message | None
    pending: bool  # a mirrored message is pending: completing it changes no count
    last_seq: int  # the conversation's last seq when read
    count: int  # its live message count then
    updated_at: object  # its updated_at then
    conversation: ConversationSummary | None  # the conversation as the newest read found it


@dataclass(frozen=True)
class Mirrored(Generic[T]):
    """One read of a :class:`ConversationMirror`: the converted values of every live message,
    in order, and, as read in the same snapshot, the newest message, the conversation and its
    last ``seq``."""

    values: tuple[T, ...]
    newest: Message | None
    conversation: ConversationSummary
    last_seq: int


class ConversationMirror(Generic[T]):
    """Every live message of one conversation, converted once, checked against the store on each read.

    Each read asks the store, in one call (``get_tail``), for the conversation's last ``seq``,
    its live message count and its newest few messages. The mirrored messages are reused only
    when they provably still hold: every message appended since is among those read, the newest
    mirrored ones are still there, and the count shows none was deleted (the counters and the
    messages come from one snapshot, see ``get_tail``). A pending message in the mirror (its
    completion changes no count) makes any change reload the conversation whole, as does
    anything the check cannot prove. So changes made by any other writer, in any process, are
    always seen; only new messages are converted.

    ``convert`` turns stored messages into the framework's values, one per message, in order.
    The values are shared between reads: return copies if callers may change them.
    """

    def __init__(self, convert: Callable[[Sequence[Message]], Sequence[T]]) -> None:
        self._convert = convert
        self._state: _State[T] | None = None
        self._guard = threading.Lock()
        self._written = 0  # messages appended through this mirror's owner since the last read

    def wrote(self, count: int) -> None:
        """``count`` messages were appended by the owner: the next read asks for that many more."""
        with self._guard:
            self._written += count

    def forget(self) -> None:
        """Drop what is mirrored: the next read reads the conversation whole."""
        with self._guard:
            self._state, self._written = None, 0

    async def read(self, chat: Scope, conversation_id: UUID | str) -> tuple[tuple[T, ...], Message | None]:
        """The converted values of every live message, in order, and the newest message.

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        read = await self.read_whole(chat, conversation_id)
        return read.values, read.newest

    async def read_whole(self, chat: Scope, conversation_id: UUID | str) -> Mirrored[T]:
        """What ``read`` answers, with the conversation and its last ``seq`` as read with them
        (its metadata, title and counters as of this read, even when no message changed).

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        with self._guard:
            state, written, self._written = self._state, self._written, 0
        fresh = await self._refresh(chat, conversation_id, state, written) if state is not None else None
        if fresh is None:
            tail = await chat.get_tail(conversation_id)
            empty: _State[T] = _State((), (), None, False, 0, 0, None, None)
            fresh = self._extend(empty, tail.messages, tail.last_seq, tail.conversation)
        with self._guard:
            self._state = fresh
        assert fresh.conversation is not None  # set by every read
        return Mirrored(fresh.values, fresh.newest, fresh.conversation, fresh.last_seq)

    async def _refresh(
        self, chat: Scope, conversation_id: Any, state: _State[T], written: int
    ) -> _State[T] | None:
        """``state`` brought up to date, or ``None`` when only a whole read can tell."""
        limit = written + _OVERLAP
        for _ in range(2):
            tail = await chat.get_tail(conversation_id, limit=limit)
            summary = tail.conversation
            now = (tail.last_seq, summary.message_count, summary.updated_at)
            if now == (state.last_seq, state.count, state.updated_at):
                return dataclasses.replace(state, conversation=summary)
            newer = [m for m in tail.messages if m.seq > state.last_seq]
            overlap = tail.messages[: len(tail.messages) - len(newer)]
            if overlap or len(tail.messages) < limit:
                return self._checked(state, newer, overlap, tail.last_seq, summary)
            # More was appended than asked for: at most one message per seq since the mirrored one.
            limit = tail.last_seq - state.last_seq + _OVERLAP
        return None

    def _checked(
        self,
        state: _State[T],
        newer: list[Message],
        overlap: list[Message],
        last_seq: int,
        summary: ConversationSummary,
    ) -> _State[T] | None:
        if state.pending:
            return None  # a pending message may have been completed or failed since
        if state.count + len(newer) != summary.message_count:
            return None  # a mirrored message was deleted
        mirrored = state.ids[len(state.ids) - len(overlap) :] if overlap else ()
        if list(mirrored) != [(m.id, m.seq) for m in overlap]:
            return None
        return self._extend(state, newer, last_seq, summary)

    def _extend(
        self, state: _State[T], stored: list[Message], last_seq: int, summary: ConversationSummary
    ) -> _State[T]:
        """``state`` with ``stored`` appended, as of the conversation read with them."""
        return _State(
            ids=state.ids + tuple((m.id, m.seq) for m in stored),
            values=state.values + tuple(self._convert(stored)),
            newest=stored[-1] if stored else state.newest,
            pending=state.pending or any(m.status == "pending" for m in stored),
            last_seq=last_seq,
            count=summary.message_count,
            updated_at=summary.updated_at,
            conversation=summary,
        )


class Mirrors(Generic[T]):
    """A :class:`ConversationMirror` per conversation, for the ``size`` conversations read most
    recently, for an adapter object serving many conversations (any thread may call it)."""

    def __init__(self, convert: Callable[[Sequence[Message]], Sequence[T]], size: int = 128) -> None:
        self._convert = convert
        self._size = size
        self._mirrors: OrderedDict[UUID, ConversationMirror[T]] = OrderedDict()
        self._guard = threading.Lock()

    async def read_whole(self, chat: Scope, conversation_id: UUID) -> Mirrored[T]:
        """``ConversationMirror.read_whole`` of the conversation's mirror (a new one if it has none).

        Raises:
            ConversationNotFound: the principal cannot see the conversation.
        """
        with self._guard:
            mirror = self._mirrors.pop(conversation_id, None) or ConversationMirror(self._convert)
            self._mirrors[conversation_id] = mirror  # the most recently read
            while len(self._mirrors) > self._size:
                self._mirrors.popitem(last=False)
        return await mirror.read_whole(chat, conversation_id)

    def wrote(self, conversation_id: UUID, count: int) -> None:
        """``count`` messages were appended to the conversation (see ``ConversationMirror.wrote``)."""
        with self._guard:
            mirror = self._mirrors.get(conversation_id)
        if mirror is not None:
            mirror.wrote(count)


class Handouts(Generic[S, T]):
    """What reads hand out, made from kept sources, handed out again while it is unchanged.

    A framework's in-memory store hands out its own objects (LangChain's
    ``InMemoryChatMessageHistory``, LlamaIndex's ``SimpleChatStore``), so a caller changing one
    changes the store. An adapter hands out values of its own instead, and making them anew for
    a long conversation on every read costs several times what comparing them costs:
    ``hand_out`` gives, for each source (told by identity), the value it gave for it the last
    time if that still equals the ``pristine`` one kept beside it, else one ``make`` makes. A
    value changed in place, at any depth, is thus replaced at the next read, and nothing a
    caller does reaches what is kept, provided ``make`` and ``pristine`` share nothing a caller
    can change (each makes its own). Two reads, by one caller or two, may share the values
    they both left unchanged. A change is told by ``==``: a value replaced by an equal one of
    another type (``1`` by ``True``), or an attribute that is not a field, is not seen.

    The values of the ``size`` keys read most recently are kept (any thread may call).
    """

    def __init__(self, make: Callable[[S], T], pristine: Callable[[S], T], size: int = 128) -> None:
        self._make = make
        self._pristine = pristine
        self._size = size
        # Per key, by the source's identity: the source (which keeps its identity its own), the
        # pristine value and the value handed out.
        self._given: OrderedDict[Hashable, dict[int, tuple[S, T, T]]] = OrderedDict()
        self._guard = threading.Lock()

    def hand_out(self, sources: Iterable[S], key: Hashable = None) -> list[T]:
        """A value for each of ``sources``, in order (see the class)."""
        with self._guard:
            before = self._given.pop(key, {})
        given: dict[int, tuple[S, T, T]] = {}
        out = []
        for source in sources:
            entry = before.get(id(source))
            if entry is None or entry[0] is not source:
                entry = (source, self._pristine(source), self._make(source))
            elif not _unchanged(entry[2], entry[1]):
                entry = (source, entry[1], self._make(source))
            given[id(source)] = entry
            out.append(entry[2])
        with self._guard:
            self._given[key] = given  # the most recently read
            while len(self._given) > self._size:
                self._given.popitem(last=False)
        return out

    def forget(self, key: Hashable = None) -> None:
        """Drop what was handed out for ``key``: its next read makes every value anew."""
        with self._guard:
            self._given.pop(key, None)


def _unchanged(handed: Any, pristine: Any) -> bool:
    """Whether a value handed out still equals its pristine one (a value a caller put in it that
    cannot be compared, a NumPy array say, counts as a change)."""
    try:
        return bool(handed == pristine)
    except Exception:  # whatever a caller's value raises when compared
        return False
