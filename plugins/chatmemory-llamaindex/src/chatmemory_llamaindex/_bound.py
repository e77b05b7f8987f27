"""What both stores hold: the principal's scope, the recording defaults, the keyed
conversations and the home loop their calls go to (see ``chatmemory.loops``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from chatmemory import Scope
from chatmemory.loops import HomeLoop
from chatmemory.recording import added_metadata
from chatmemory_llamaindex._keyed import KeyedConversations

SYNC_HINT = (
    "LlamaIndex's synchronous methods (put/get/set, Memory.from_defaults(chat_history=...)) must not "
    "run there: use the async methods on that loop, or create the store on a loop that stays free"
)
"""What to do instead of a synchronous LlamaIndex call on the loop that owns the store."""

DEFAULT_MODEL = "unknown"
"""Recorded as a run's model until instrumentation sees the LLM that drives it."""


class BoundStore(BaseModel):
    """The fields and set-up both chat stores share (mixed in before LlamaIndex's base)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chat: Scope = Field(exclude=True)
    model: str = DEFAULT_MODEL
    metadata: dict[str, Any] = Field(default_factory=dict)
    _keyed: KeyedConversations = PrivateAttr()
    _home: HomeLoop = PrivateAttr()

    def _bind(
        self,
        chat: Scope,
        model: str,
        metadata: Mapping[str, Any] | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        """What each store's ``__init__`` does. Each store defines its own ``__init__`` (the
        public signature): pydantic's mypy plugin would otherwise give it one made of its
        fields, keyword-only, and refuse ``chat`` given positionally."""
        checked = added_metadata(metadata)
        super().__init__(chat=chat, model=model, metadata=checked)
        self._keyed = KeyedConversations(chat, model=model, metadata=checked)
        self._home = HomeLoop(loop, hint=SYNC_HINT, any_loop=chat.any_loop)
