"""The chat stores with messages shaped as LlamaIndex's provider integrations build them:
tool calls as the OpenAI SDK's objects (whole or streamed), content blocks of every kind,
values with no JSON form. Each reads back as ``SimpleChatStore`` gives it back, once it has
been saved (objects in ``additional_kwargs`` as their JSON form), and its parts hold what a
reader of another framework needs."""

from __future__ import annotations

import io
import os

from chatmemory_llamaindex import ChatMemoryChatStore
from llama_index.core.base.llms.types import (
    AudioBlock,
    DocumentBlock,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store import SimpleChatStore
from openai.types.chat import ChatCompletionMessageToolCall
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall, ChoiceDeltaToolCallFunction
from openai.types.chat.chat_completion_message_tool_call import Function

from chatmemory import (
    AudioPart,
    FilePart,
    ImagePart,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.scope import Scope

ARGS = '{"a": 2, "b": 3}'
CALL = ChatCompletionMessageToolCall(
    id="call_1", type="function", function=Function(name="add", arguments=ARGS)
)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00\x00\x00\x01" * 2 + b"\x08\x06\x00\x00\x00"


async def stored_parts(alice: Scope, store: ChatMemoryChatStore, message: ChatMessage) -> list[object]:
    await store.async_add_message("k", message)
    (stored,) = await alice.transcript((await alice.list_conversations()).items[0].id)
    return list(stored.parts or [])


async def test_an_openai_reply_holding_its_calls_twice_stores_each_call_once(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    # llama-index-llms-openai gives each tool call as a ToolCallBlock and keeps the SDK's
    # objects in additional_kwargs: a reader of the parts (another framework resuming the
    # conversation) would send the call twice under one id, which providers refuse.
    reply = ChatMessage(
        role="assistant",
        blocks=[ToolCallBlock(tool_call_id="call_1", tool_name="add", tool_kwargs=ARGS)],
        additional_kwargs={"tool_calls": [CALL]},
    )
    assert await stored_parts(alice, store, reply) == [ToolCallPart(id="call_1", name="add", arguments=ARGS)]


async def test_the_sdks_tool_call_objects_read_back_as_a_saved_simple_chat_store_gives_them(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    streamed = ChoiceDeltaToolCall(
        index=0,
        id="call_2",
        type="function",
        function=ChoiceDeltaToolCallFunction(name="add", arguments=ARGS),
    )
    sent = [
        ChatMessage(role="user", content="2+3? and again"),
        ChatMessage(role="assistant", content=None, additional_kwargs={"tool_calls": [CALL, streamed]}),
    ]
    await store.aset_messages("k", sent)
    got = await store.aget_messages("k")

    # What SimpleChatStore's persist/load gives back: the messages' own JSON round trip.
    saved = [ChatMessage.model_validate_json(m.model_dump_json()) for m in sent]
    assert got == saved
    assert got[1].additional_kwargs["tool_calls"] == [
        {"id": "call_1", "function": {"arguments": ARGS, "name": "add"}, "type": "function"},
        {"index": 0, "id": "call_2", "function": {"arguments": ARGS, "name": "add"}, "type": "function"},
    ]
    stored = await alice.transcript((await alice.list_conversations()).items[0].id)
    assert stored[1].parts == [
        ToolCallPart(id="call_1", name="add", arguments=ARGS),
        ToolCallPart(id="call_2", name="add", arguments=ARGS),
    ]


async def test_blocks_of_every_kind_read_back_as_simple_chat_store_gives_them(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    sent = [
        ChatMessage(
            role="user",
            blocks=[
                TextBlock(text="What are these?"),
                ImageBlock(image=PNG),
                ImageBlock(url="https://example.com/cat.png"),
                AudioBlock(audio=b"ID3\x03\x00\x00\x00\x00\x00\x00", format="mp3"),
                DocumentBlock(data=b"%PDF-1.4\n", document_mimetype="application/pdf"),
            ],
        ),
        ChatMessage(
            role="assistant",
            blocks=[
                ThinkingBlock(content="A cat, a tune, a form.", additional_information={"signature": "EqQB"}),
                TextBlock(text="A cat, a tune and a form."),
            ],
        ),
    ]
    simple = SimpleChatStore()
    simple.set_messages("k", [m.model_copy(deep=True) for m in sent])
    await store.aset_messages("k", sent)

    assert await store.aget_messages("k") == simple.get_messages("k")
    question, answer = await alice.transcript((await alice.list_conversations()).items[0].id)
    assert [type(p) for p in question.parts or []] == [TextPart, ImagePart, ImagePart, AudioPart, FilePart]
    assert answer.parts == [
        ReasoningPart(text="A cat, a tune, a form."),
        TextPart(text="A cat, a tune and a form."),
    ]


async def test_an_infinite_logprob_is_kept_as_null(alice: Scope, store: ChatMemoryChatStore) -> None:
    reply = ChatMessage(role="assistant", content="4", additional_kwargs={"logprob": float("-inf")})
    await store.async_add_message("k", reply)
    (got,) = await store.aget_messages("k")
    assert got.additional_kwargs == {"logprob": None}


async def test_media_blocks_given_a_file_object_are_stored_as_its_bytes(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    # LlamaIndex takes an open file for an image, audio or document; its own JSON form
    # cannot hold one (it fails on the raw bytes), and the store failed the same way.
    sent = ChatMessage(
        role="user",
        blocks=[
            TextBlock(text="What are these?"),
            ImageBlock(image=io.BytesIO(PNG)),
            AudioBlock(audio=io.BytesIO(b"ID3\x03\x00\x00"), format="mp3"),
            DocumentBlock(data=io.BytesIO(b"%PDF-1.4\n"), document_mimetype="application/pdf"),
        ],
    )
    parts = await stored_parts(alice, store, sent)
    assert [type(p) for p in parts] == [TextPart, ImagePart, AudioPart, FilePart]

    (got,) = await store.aget_messages("k")
    assert got.blocks == [
        TextBlock(text="What are these?"),
        ImageBlock(image=PNG),
        AudioBlock(audio=b"ID3\x03\x00\x00", format="mp3"),
        DocumentBlock(data=b"%PDF-1.4\n", document_mimetype="application/pdf"),
    ]


async def test_an_anthropic_reply_stores_its_tool_calls_as_parts(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    # llama-index-llms-anthropic keeps a reply's tool calls as Anthropic's tool_use blocks in
    # additional_kwargs: without them in the parts, a reader of the parts sees the tool's
    # result answer no call, which providers refuse.
    sent = [
        ChatMessage(role="user", content="2+3?"),
        ChatMessage(
            role="assistant",
            content="",
            additional_kwargs={
                "tool_calls": [
                    {"id": "toolu_01", "input": {"a": 2, "b": 3}, "name": "add", "type": "tool_use"}
                ],
                "thinking": None,
            },
        ),
        ChatMessage(role="tool", content="5", additional_kwargs={"tool_call_id": "toolu_01"}),
    ]
    await store.aset_messages("k", sent)
    assert await store.aget_messages("k") == sent
    _, call, result = await alice.transcript((await alice.list_conversations()).items[0].id)
    assert call.parts == [ToolCallPart(id="toolu_01", name="add", arguments={"a": 2, "b": 3})]
    assert result.parts == [ToolResultPart(call_id="toolu_01", content="5")]


async def test_an_anthropic_replys_thinking_is_its_reasoning_part(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    thinking = {"signature": "EqQBCkYIARgC", "thinking": "Two and three.", "type": "thinking"}
    reply = ChatMessage(
        role="assistant", content="5", additional_kwargs={"tool_calls": [], "thinking": thinking}
    )
    assert await stored_parts(alice, store, reply) == [
        ReasoningPart(text="Two and three."),
        TextPart(text="5"),
    ]
    assert await store.aget_messages("k") == [reply]


async def test_a_google_reply_stores_its_function_calls_as_parts(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    # google-genai's FunctionCall objects: their arguments are in ``args``.
    reply = ChatMessage(
        role="assistant",
        content=None,
        additional_kwargs={"tool_calls": [{"id": "fc_1", "name": "add", "args": {"a": 2, "b": 3}}]},
    )
    assert await stored_parts(alice, store, reply) == [
        ToolCallPart(id="fc_1", name="add", arguments={"a": 2, "b": 3})
    ]


async def test_a_user_image_larger_than_the_inline_limit_is_stored(store: ChatMemoryChatStore) -> None:
    photo = b"\xff\xd8\xff\xe0" + os.urandom(1_500_000)
    question = ChatMessage(role="user", blocks=[TextBlock(text="What is this?"), ImageBlock(image=photo)])
    await store.async_add_message("k", question)
    assert await store.aget_messages("k") == [question]


async def test_an_answer_longer_than_the_content_limit_is_stored_and_read_back_whole(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    essay = ChatMessage(role="assistant", content="word " * 24_000)
    await store.async_add_message("k", ChatMessage(role="user", content="Write an essay."))
    await store.async_add_message("k", essay)
    assert (await store.aget_messages("k"))[-1] == essay
    stored = (await alice.transcript((await alice.list_conversations()).items[0].id))[-1]
    assert len(stored.content) <= alice.limits.content
    assert (essay.content or "").startswith(stored.content.split("\n[")[0])


async def test_a_bedrock_reply_stores_its_tool_calls_under_their_ids(
    alice: Scope, store: ChatMemoryChatStore
) -> None:
    # llama-index-llms-bedrock-converse: the Converse API's toolUse dicts, with the calls'
    # ids (and statuses) listed beside them; the tool's result answers the toolUseId.
    sent = [
        ChatMessage(role="user", content="2+3?"),
        ChatMessage(
            role="assistant",
            content="",
            additional_kwargs={
                "tool_calls": [{"toolUseId": "tooluse_kZJ1", "name": "add", "input": {"a": 2, "b": 3}}],
                "tool_call_id": ["tooluse_kZJ1"],
                "status": [],
            },
        ),
        ChatMessage(role="tool", content="5", additional_kwargs={"tool_call_id": "tooluse_kZJ1"}),
    ]
    await store.aset_messages("k", sent)
    assert await store.aget_messages("k") == sent
    _, call, result = await alice.transcript((await alice.list_conversations()).items[0].id)
    assert call.parts == [ToolCallPart(id="tooluse_kZJ1", name="add", arguments={"a": 2, "b": 3})]
    assert result.parts == [ToolResultPart(call_id="tooluse_kZJ1", content="5")]
