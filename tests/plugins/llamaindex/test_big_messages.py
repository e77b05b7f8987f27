"""A long answer and a photo over the inline limit through every path that writes a key: set,
insertion before the end (the key rewritten with its stored messages), archive."""

from __future__ import annotations

from chatmemory_llamaindex import ChatMemoryChatStore, ChatMemoryDBChatStore
from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base_db import MessageStatus

ESSAY = "word " * 30_000
PHOTO = b"\xff\xd8\xff\xe0" + bytes(1_500_000)


def big() -> list[ChatMessage]:
    return [
        ChatMessage(
            role="user", blocks=[TextBlock(text="look"), ImageBlock(image=PHOTO, image_mimetype="image/jpeg")]
        ),
        ChatMessage(role="assistant", content=ESSAY),
    ]


async def test_set_and_insertions_take_messages_over_the_limits(store: ChatMemoryChatStore) -> None:
    await store.aset_messages(
        "k", [ChatMessage(role="user", content="a"), ChatMessage(role="assistant", content="b")]
    )
    await store.async_add_message("k", big()[1], idx=1)  # an insertion before the end rewrites the key
    await store.async_add_message("k", big()[0], idx=0)
    got = await store.aget_messages("k")
    assert [m.role.value for m in got] == ["user", "user", "assistant", "assistant"]
    assert got[2].content == ESSAY
    await store.aset_messages("k", big() + got)
    assert len(await store.aget_messages("k")) == 6


async def test_archived_messages_over_the_limits(db_store: ChatMemoryDBChatStore) -> None:
    await db_store.add_messages("k", big())
    await db_store.add_messages("k", big(), status=MessageStatus.ARCHIVED)
    await db_store.archive_oldest_messages("k", 1)
    await db_store.set_messages("k", big(), status=MessageStatus.ARCHIVED)
    got = await db_store.get_messages("k", status=MessageStatus.ARCHIVED)
    assert got[1].content == ESSAY
