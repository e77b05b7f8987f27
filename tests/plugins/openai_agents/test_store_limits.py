"""Inputs the Agents SDK takes as they are but the store would refuse: a run is recorded
all the same, never failed by its session."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import httpx
import pytest
from agents import Agent, RunConfig, Runner, SQLiteSession, UserError, function_tool
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.testing import assistant_message, function_call
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import ChatMemory, Conversation, InvalidInputError, Limits, Principal
from chatmemory.scope import Scope
from tests.plugins._openai_http import FakeOpenAI, chat_completion, reset_ids
from tests.plugins.openai_agents._support import NamedModel, add, make_agent

MANY = 1_500  # over the store's default of 1,000 messages per append call
# A model served from a long local path (vLLM serves a model under the path it was loaded from).
LONG_MODEL = "/mnt/models/hub/" + "/".join(["org--" + "a" * 90, "snapshots", "b" * 80, "Llama-3.1-8B"])
LABEL = LONG_MODEL[:99] + "…" + LONG_MODEL[-100:]


def inputs(count: int) -> list[Any]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(count)]


def scripted(model: str) -> NamedModel:
    return NamedModel(
        model, [[function_call("add", {"a": 2, "b": 3}, call_id="c1")], [assistant_message("5")]]
    )


def calculator(model: str) -> Any:
    return make_agent("calc", scripted(model), tools=[add])


async def test_a_run_given_more_items_than_one_append_holds(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id)
    agent = make_agent("helper", NamedModel("model-a", [[assistant_message("Done.")]]))

    assert (await session.run(agent, inputs(MANY))).final_output == "Done."

    assert len(await session.get_items()) == MANY + 1
    (history,) = (await alice.get_conversation(conversation.id)).histories
    assert history.status == "completed"


async def test_add_items_of_more_than_one_append_holds(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id)
    await session.add_items(inputs(MANY))
    assert await session.get_items() == inputs(MANY)


async def test_a_model_name_longer_than_the_store_takes_is_recorded_shortened(
    alice: Scope, conversation: Conversation
) -> None:
    assert len(LONG_MODEL) > 200
    session = ChatMemorySession(alice, conversation.id)

    assert (await session.run(calculator(LONG_MODEL), "2+3?")).final_output == "5"
    result = await Runner.run(calculator(LONG_MODEL), "2+3?", session=session, hooks=session.hooks)
    assert result.final_output == "5"
    config = RunConfig(model=scripted(LONG_MODEL))
    assert (await session.run(calculator("m"), "2+3?", run_config=config)).final_output == "5"

    detail = await alice.get_conversation(conversation.id, messages=True)
    assert [(h.model, h.status) for h in detail.histories] == [(LABEL, "completed")] * 3
    assert len(LABEL) == 200
    for history in detail.histories:
        assert {m.model for m in history.messages or [] if m.role == "assistant"} == {LABEL}


async def test_a_blank_model_name_is_recorded_as_the_models_class(
    alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id, model=" ")

    result = await Runner.run(calculator(" "), "2+3?", session=session, hooks=session.hooks)

    assert result.final_output == "5"
    (history,) = (await alice.get_conversation(conversation.id)).histories
    assert (history.model, history.status) == ("NamedModel", "completed")


async def test_a_session_model_longer_than_the_store_takes(alice: Scope, conversation: Conversation) -> None:
    session = ChatMemorySession(alice, conversation.id, model=LONG_MODEL)

    await session.add_items(inputs(2))

    (history,) = (await alice.get_conversation(conversation.id)).histories
    assert history.model == LABEL


class NanServingOpenAI(FakeOpenAI):
    """The fake API, its JSON written as Python writes it: ``-Infinity`` and ``NaN`` as they are
    (a server built on Python's ``json``, as some OpenAI-compatible ones are, sends them so)."""

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(request.content))
        return httpx.Response(200, content=json.dumps(self.bodies.pop(0)).encode(), headers=JSON)


JSON = {"content-type": "application/json"}


async def test_a_logprob_of_minus_infinity_in_an_answer(alice: Scope, conversation: Conversation) -> None:
    outputs = []
    for own in (False, True):
        reset_ids()
        body = chat_completion("local-model", "The sum is 5.")
        body["choices"][0]["logprobs"]["content"][1]["logprob"] = -math.inf
        fake = NanServingOpenAI(body, chat_completion("local-model", "Still 5."))
        model = OpenAIChatCompletionsModel(model="local-model", openai_client=fake.client())
        agent = Agent(name="calc", instructions="Be brief.", model=model)
        sid = str(conversation.id)  # the SDK's session of the same id: the same prompt cache key
        session: Any = ChatMemorySession(alice, sid) if own else SQLiteSession(sid)
        first = await Runner.run(agent, "What is 2+3?", session=session)
        second = await Runner.run(agent, "And again?", session=session)
        outputs.append((first.final_output, second.final_output, fake.requests))
    assert outputs[0] == outputs[1]
    assert outputs[1][:2] == ("The sum is 5.", "Still 5.")
    first, _ = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert first.status == "completed"
    answer = (first.messages or [])[-1].native
    assert answer is not None
    logprobs = answer.data["content"][0]["logprobs"]  # type: ignore[call-overload,index]
    # JSON has no such float: null stands for it.
    assert [p["logprob"] for p in logprobs] == [-0.01, None, -0.01, -0.01]


async def test_writes_fit_a_lower_cap_on_messages_per_call(db_url: str) -> None:
    async with ChatMemory.open(db_url, limits=Limits(messages_per_call=10)) as memory:
        chat = memory.scoped(Principal("alice"))
        conversation = await chat.start_conversation()
        session = ChatMemorySession(chat, conversation.id)
        await session.add_items(inputs(25))
        agent = make_agent("helper", NamedModel("model-a", [[assistant_message("Done.")]]))
        assert (await session.run(agent, inputs(25))).final_output == "Done."

        items = await session.get_items()
        assert items[:50] == [*inputs(25), *inputs(25)]
        assert [i.get("role") for i in items[50:]] == ["assistant"]
        histories = (await chat.get_conversation(conversation.id)).histories
        assert histories[-1].status == "completed"


async def test_an_input_file_in_base64_with_line_breaks(alice: Scope, conversation: Conversation) -> None:
    # ``base64.encodebytes`` breaks its output into lines: the SDK takes the item as it is.
    lines = base64.encodebytes(b"%PDF-1.7 " + bytes(range(256)) * 3).decode()
    items: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Summarise these."},
                {"type": "input_file", "file_data": lines, "filename": "a.pdf"},
                {"type": "input_file", "file_data": f"data:application/pdf;base64,{lines}"},
                {"type": "input_audio", "input_audio": {"data": lines, "format": "wav"}},
            ],
        }
    ]
    reference = SQLiteSession(str(conversation.id))
    await reference.add_items(items)
    session = ChatMemorySession(alice, conversation.id)

    await session.add_items(items)

    assert await session.get_items() == await reference.get_items() == items
    (message,) = await alice.transcript(conversation.id)
    # Every reader gets the files too, their base64 joined again.
    assert message.content == "Summarise these."
    assert message.parts is not None
    joined = "".join(lines.split())
    assert [(p.type, getattr(p, "data", None)) for p in message.parts] == [
        ("text", None),
        ("file", joined),
        ("file", joined),
        ("audio", joined),
    ]


async def test_an_input_file_whose_data_is_not_base64(alice: Scope, conversation: Conversation) -> None:
    # The SDK takes any text as file_data; what is not base64 is named for other readers.
    item: Any = {
        "role": "user",
        "content": [{"type": "input_file", "file_data": "not base64!", "filename": "a.pdf"}],
    }
    session = ChatMemorySession(alice, conversation.id)
    await session.add_items([item])
    assert await session.get_items() == [item]
    (message,) = await alice.transcript(conversation.id)
    assert message.content == "[file (application/pdf) that is not base64: kept in this item only]"


BINARY = "PK\x03\x04\x00\x00 caf\udce9.txt"  # a zip's first bytes read as text, a surrogate-escaped name
REPLACED = "PK\x03\x04\ufffd\ufffd caf\ufffd.txt"  # as stored: U+FFFD in place of each


async def test_a_tool_output_neither_backend_can_hold_as_text(
    alice: Scope, conversation: Conversation
) -> None:
    # SQLiteSession stores it as JSON escapes; no database column of text holds a NUL character
    # or a lone surrogate, so both forms get the replacement character instead of failing the run.
    @function_tool
    def read_file() -> str:
        """Read a file."""
        return BINARY

    model = NamedModel("m", [[function_call("read_file", {}, call_id="c1")], [assistant_message("A zip.")]])
    session = ChatMemorySession(alice, conversation.id)
    result = await Runner.run(make_agent("reader", model, tools=[read_file]), "What is it?", session=session)
    assert result.final_output == "A zip."
    (output,) = [i for i in await session.get_items() if i.get("type") == "function_call_output"]
    assert output["output"] == REPLACED
    (run,) = (await alice.get_conversation(conversation.id, messages=True)).histories
    assert run.status == "completed" and (run.messages or [])[2].content == REPLACED


async def test_a_default_model_longer_than_the_store_takes(
    alice: Scope, conversation: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's default model (OPENAI_DEFAULT_MODEL) drives what a session without a model of
    # its own records outside a run: add_items, and a pop putting items back.
    monkeypatch.setenv("OPENAI_DEFAULT_MODEL", LONG_MODEL)
    session = ChatMemorySession(alice, conversation.id)

    await session.add_items(inputs(2))

    (history,) = (await alice.get_conversation(conversation.id)).histories
    assert history.model == LABEL.lower()


async def test_reads_fit_a_lower_cap_on_a_page(db_url: str) -> None:
    # A compaction reads the session's newest items in pages of the store's default cap (1,000)
    # unless the store takes fewer.
    async with ChatMemory.open(db_url, limits=Limits(list_limit=20)) as memory:
        chat = memory.scoped(Principal("alice"))
        conversation = await chat.start_conversation()
        session = ChatMemorySession(chat, conversation.id)
        await session.add_items(inputs(25))
        assert len(await session.get_items()) == 25
        assert await session.pop_item() == inputs(25)[-1]
        assert await session._atomic_replace_items(inputs(3))  # as OpenAIResponsesCompactionSession calls it
        assert await session.get_items() == inputs(3)


async def test_a_run_failing_on_a_store_with_a_lower_content_limit(db_url: str) -> None:
    # The error a failed run records is cut to the store's content limit when that is lower than
    # the adapter's own cut (10,000 characters): the history is closed, not left running.
    @function_tool(failure_error_function=None)  # the error ends the run
    def explode() -> str:
        """Fail, saying much."""
        raise RuntimeError("boom " + "x" * 20_000)

    async with ChatMemory.open(db_url, limits=Limits(content=5_000)) as memory:
        chat = memory.scoped(Principal("alice"))
        conversation = await chat.start_conversation()
        model = NamedModel("m", [[function_call("explode", {}, call_id="c1")], [assistant_message("?")]])
        with pytest.raises(UserError, match="boom x"):
            await ChatMemorySession(chat, conversation.id).run(make_agent("a", model, tools=[explode]), "Go.")
        (history,) = (await chat.get_conversation(conversation.id)).histories
        assert history.status == "failed"
        assert history.error is not None and len(history.error) <= 5_000


@pytest.mark.parametrize("bad", ["a string item", None, 42, object()], ids=["str", "None", "int", "object"])
async def test_an_item_that_is_not_a_dict_is_refused_with_a_typed_error(
    bad: Any, alice: Scope, conversation: Conversation
) -> None:
    """Input items are dicts (``TResponseInputItem``): anything else is refused by name, and the
    items beside it are not written either."""
    session = ChatMemorySession(alice, conversation.id)
    with pytest.raises(InvalidInputError, match=r"invalid items.1: is a"):
        await session.add_items([{"role": "user", "content": "kept out"}, bad])
    assert await session.get_items() == []
    assert (await alice.get_conversation(conversation.id)).histories == []


_NOT_LISTS = [None, {"role": "user", "content": "hi"}, "hi", (i for i in ())]


@pytest.mark.parametrize("bad", _NOT_LISTS, ids=["None", "dict", "str", "generator"])
async def test_items_that_are_not_a_list_are_refused_with_a_typed_error(
    bad: Any, alice: Scope, conversation: Conversation
) -> None:
    session = ChatMemorySession(alice, conversation.id)
    with pytest.raises(InvalidInputError, match="invalid items: is a"):
        await session.add_items(bad)
    assert await session.get_items() == []
