"""``recording.fitted``: a message an adapter keeps whole in its native form, cut to the store's
limits in its neutral content only, so that the store takes it rather than failing the run."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatmemory import (
    ChatMemory,
    ContentPart,
    History,
    ImagePart,
    InvalidInputError,
    Limits,
    NewMessage,
    Principal,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.recording import fitted
from chatmemory.scope import Scope

SMALL = Limits(content=200, inline_bytes=16)
NATIVE = {"format": "demo", "data": {"whole": True}}


def _media(size: int) -> ImagePart:
    return ImagePart(data=base64.b64encode(b"\x89" * size).decode(), media_type="image/png")


_texts = st.text(alphabet="ab é\n", max_size=600)
_parts: st.SearchStrategy[ContentPart] = st.one_of(
    _texts.map(lambda text: TextPart(text=text)),
    st.builds(ToolResultPart, call_id=st.sampled_from(["c1", "c2"]), content=_texts),
    st.builds(ToolCallPart, id=st.just("c1"), name=st.just("add"), arguments=st.just({"a": 1})),
    _texts.map(lambda text: ReasoningPart(text=text)),
    st.integers(0, 40).map(_media),
)
_content = st.one_of(_texts, st.lists(_parts, max_size=8))


async def test_a_message_within_the_limits_is_returned_as_is() -> None:
    for message in (
        NewMessage("assistant", "x" * 200, native=NATIVE),
        NewMessage("user", [TextPart(text="x" * 100), TextPart(text="y" * 99), _media(16)], native=NATIVE),
    ):
        assert fitted(message, SMALL) is message


async def test_many_text_parts_that_fit_are_returned_as_is() -> None:
    """Their newlines take most of the limit, but the text fits: nothing is joined."""
    message = NewMessage("assistant", [TextPart(text="") for _ in range(SMALL.content - 50)], native=NATIVE)
    assert fitted(message, SMALL) is message


async def test_a_long_text_keeps_its_beginning_and_says_how_much_it_lost() -> None:
    essay = "word " * 100
    message = NewMessage("assistant", essay, model="m", usage={"output_tokens": 9}, native=NATIVE, key="k")
    fit = fitted(message, SMALL)
    assert isinstance(fit.content, str) and 199 <= len(fit.content) <= 200
    kept, note = fit.content.split("\n")
    assert essay.startswith(kept)
    assert note == f"[{len(essay) - len(kept)} more characters in this message's native form]"
    # Nothing but the content changes.
    assert fit.model_dump(exclude={"content"}) == message.model_dump(exclude={"content"})


async def test_the_longest_texts_are_cut_first_and_the_short_ones_stay_whole() -> None:
    page, short, call = "p" * 900, "five", ToolCallPart(id="c1", name="fetch", arguments={"url": "u"})
    message = NewMessage(
        "tool",
        [ToolResultPart(call_id="c1", content=page), ToolResultPart(call_id="c2", content=short), call],
        native=NATIVE,
    )
    fit = fitted(message, SMALL)
    assert isinstance(fit.content, list)
    first, second, third = fit.content
    assert isinstance(first, ToolResultPart) and first.call_id == "c1"
    assert first.content.startswith("p" * 40) and first.content.endswith("native form]")
    assert second == ToolResultPart(call_id="c2", content=short)
    assert third is call
    assert 199 <= len(fit.text) <= 200


async def test_inline_data_over_the_limit_is_named_in_its_place() -> None:
    message = NewMessage("user", [TextPart(text="What is this?"), _media(17)], native=NATIVE)
    fit = fitted(message, SMALL)
    assert fit.content == [
        TextPart(text="What is this?"),
        TextPart(
            text="[image (image/png, 17 bytes) over the store's 16-byte inline limit: "
            "kept in this message's native form only]"
        ),
    ]


@pytest.fixture
async def small(db_url: str) -> AsyncIterator[tuple[Scope, History]]:
    """A scope of a store with ``SMALL`` limits, and a running history in it."""
    async with ChatMemory.open(db_url, limits=SMALL) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        history = await chat.start_history(conv.id, model="m")
        yield chat, history


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_content)
async def test_a_fitted_message_is_stored_and_keeps_all_it_can(
    content: str | list[ContentPart], small: tuple[Scope, History]
) -> None:
    chat, history = small
    message = NewMessage("assistant", content, native=NATIVE)
    fit = fitted(message, SMALL)
    (stored,) = await chat.append_messages(history.id, [fit])
    assert stored.content == fit.text and stored.native == message.native
    if isinstance(content, str):
        assert isinstance(fit.content, str)
        assert _cut_from(content, fit.content)
        return
    assert isinstance(fit.content, list) and len(fit.content) == len(content)
    for old, new in zip(content, fit.content, strict=True):
        if isinstance(old, ImagePart) and old.data_size > SMALL.inline_bytes:
            (named,) = fitted(NewMessage("user", [old]), Limits(inline_bytes=16)).content
            assert isinstance(new, TextPart) and isinstance(named, TextPart) and "inline limit" in named.text
            assert _cut_from(named.text, new.text)
        elif isinstance(old, TextPart | ToolResultPart):
            assert type(new) is type(old)
            assert _cut_from(_text(old), _text(new))
        else:
            assert new is old


def _text(part: ContentPart) -> str:
    assert isinstance(part, TextPart | ToolResultPart)
    return part.text if isinstance(part, TextPart) else part.content


def _cut_from(before: str, after: str) -> bool:
    """Whether ``after`` is ``before``, or its beginning with or without the note of a cut (the
    texts drawn above hold no ``[``)."""
    return before.startswith(after.split("\n[")[0]) and (after == before or len(after) < len(before))


async def test_a_message_over_the_limits_is_still_refused_unless_fitted(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    assert alice.limits == Limits()
    essay = NewMessage("assistant", "word " * 24_000, native=NATIVE)
    with pytest.raises(InvalidInputError) as refused:
        await alice.append_messages(run.id, [essay])
    assert refused.value.field == "messages.0.content"
    (stored,) = await alice.append_messages(run.id, [fitted(essay, alice.limits)])
    assert alice.limits.content - 1 <= len(stored.content) <= alice.limits.content
    assert stored.native is not None and stored.native.data == {"whole": True}


async def test_a_message_of_more_text_parts_than_the_limit_has_characters(
    small: tuple[Scope, History],
) -> None:
    """The newlines joining the texts alone are over the limit: adjacent text parts become one,
    which is cut; the other parts stay, in order."""
    chat, history = small
    image = _media(8)
    parts: list[ContentPart] = [TextPart(text=f"a{i}") for i in range(SMALL.content + 50)]
    parts[5:5] = [image]
    fit = fitted(NewMessage("assistant", parts, native=NATIVE), SMALL)
    assert len(fit.text) <= SMALL.content
    first, second, third = fit.content
    assert isinstance(first, TextPart) and first.text == "a0\na1\na2\na3\na4"
    assert second == image
    assert isinstance(third, TextPart) and third.text.startswith("a5\na6\n")
    (stored,) = await chat.append_messages(history.id, [fit])
    assert stored.content == fit.text and stored.parts == fit.content
    assert stored.native is not None and stored.native.data == {"whole": True}
