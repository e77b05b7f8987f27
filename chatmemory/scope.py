"""One principal's view of the store."""

from __future__ import annotations

from chatmemory._context import ContextOps
from chatmemory._conversations import ConversationOps
from chatmemory._export import ExportOps
from chatmemory._histories import HistoryOps
from chatmemory._merge import MergeOps
from chatmemory._messages import MessageOps
from chatmemory._purge import PurgeOps
from chatmemory._replace import ReplaceOps
from chatmemory._runs import RunOps
from chatmemory._search import SearchOps
from chatmemory._watch import WatchOps

__all__ = ["Scope"]


class Scope(
    ConversationOps,
    HistoryOps,
    MergeOps,
    ReplaceOps,
    RunOps,
    MessageOps,
    SearchOps,
    ContextOps,
    ExportOps,
    PurgeOps,
    WatchOps,
):
    """One principal's view of the store, from ``memory.scoped(principal)``.

    Every call is one transaction. Anything the principal may not see raises the same
    ``NotFoundError`` as something that does not exist, with the same message.
    """
