"""chatmemory for LlamaIndex: chat stores that record every agent run as a history.

``ChatMemoryChatStore`` is a ``BaseChatStore`` (for ``ChatMemoryBuffer`` and anything else
taking one); ``ChatMemoryDBChatStore`` is the async store of the newer ``Memory``. Each
chat-store key is one conversation of the scope's principal.
"""

from __future__ import annotations

from chatmemory_llamaindex._convert import NATIVE_FORMAT
from chatmemory_llamaindex.chat_store import ChatMemoryChatStore
from chatmemory_llamaindex.db_chat_store import ChatMemoryDBChatStore

__all__ = ["NATIVE_FORMAT", "ChatMemoryChatStore", "ChatMemoryDBChatStore"]
