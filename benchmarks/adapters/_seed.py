"""Stored conversations for W6, loaded before anything is timed.

chatmemory's conversations are written as the adapters write them: one completed history
per turn, each message with the native payload its adapter keeps. They are loaded in one
transaction through the public ``export_conversation`` / ``import_conversation`` pair, since
ten thousand turns one call at a time would take minutes and measure nothing of interest.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from benchmarks._data import Msg, message
from chatmemory import NewMessage, flatten_content
from chatmemory.scope import Scope

TAG = "w6"
REPLY = message("w6-reply", 1).text  # what every fake model answers: ~300 characters


def stored(length: int) -> list[Msg]:
    """The messages of a stored conversation: ``length`` of them, user and assistant in turns."""
    return [message(TAG, i) for i in range(length)]


def pairs(messages: Sequence[Msg]) -> list[tuple[Msg, Msg]]:
    """(user, assistant) turns of ``messages``."""
    return [(messages[i], messages[i + 1]) for i in range(0, len(messages) - 1, 2)]


async def import_turns(
    chat: Scope,
    turns: Sequence[Sequence[NewMessage]],
    *,
    model: str,
    metadata: Mapping[str, Any],
    system_prompts: list[str] | None = None,
) -> UUID:
    """A new conversation holding ``turns``, each one completed history; returns its id."""
    skeleton = await chat.start_conversation(title="W6")
    document = await chat.export_conversation(skeleton.id)
    await chat.delete_conversation(skeleton.id)
    start = datetime.now(UTC)
    seq = 0
    histories = []
    for number, turn in enumerate(turns):
        at = (start + timedelta(microseconds=number)).isoformat()
        messages = []
        for new in turn:
            seq += 1
            content = new.content
            parts = None if isinstance(content, str) else [p.model_dump(mode="json") for p in content]
            messages.append(
                {
                    **new.model_dump(mode="json", exclude={"content"}),
                    "model": new.model if new.model or new.role != "assistant" else model,
                    "content": content if isinstance(content, str) else flatten_content(content),
                    "parts": parts,
                    "id": str(uuid.uuid4()),
                    "seq": seq,
                    "created_at": at,
                    "updated_at": at,
                }
            )
        histories.append(
            {
                "id": str(uuid.uuid4()),
                "model": model,
                "system_prompts": system_prompts,
                "metadata": dict(metadata),
                "status": "completed",
                "finished_at": at,
                "created_at": at,
                "updated_at": at,
                "messages": messages,
            }
        )
    conversation = await chat.import_conversation({**document, "histories": histories}, new_ids=True)
    return conversation.id
