"""Bad input: a typed InvalidInputError naming the field, and nothing written."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import PrivateAttr, field_validator

from chatmemory import ChatMemory, InvalidInputError, Limits, NewMessage, Principal
from chatmemory._validation import MAX_JSON_DEPTH
from chatmemory.scope import Scope

BAD_MESSAGES: list[tuple[dict[str, Any], str]] = [
    ({"role": "robot", "content": "x"}, "messages.0.role"),
    ({"role": "user"}, "messages.0.content"),
    ({"role": "user", "content": 5}, "messages.0.content"),
    ({"role": "assistant", "content": "x", "model": ""}, "messages.0.model"),
    ({"role": "user", "content": "x", "model": "gpt"}, "messages.0.model"),
    ({"role": "user", "content": "x" * 100_001}, "messages.0.content"),
    ({"role": "user", "content": [{"type": "hologram"}]}, "messages.0.content.0"),
    ({"role": "user", "content": [{"type": "image"}]}, "messages.0.content.0"),
    (
        {"role": "user", "content": [{"type": "image", "data": "!!notbase64", "media_type": "image/png"}]},
        "messages.0.content.0",
    ),
    (
        {
            "role": "user",
            "content": [{"type": "image", "data": "aGk=", "media_type": "image/png", "url": "https://x"}],
        },
        "messages.0.content.0",
    ),
    (
        {
            "role": "user",
            "content": [
                {
                    "type": "file",
                    "data": base64.b64encode(b"x" * (1 << 20 | 1)).decode(),
                    "media_type": "application/pdf",
                }
            ],
        },
        "messages.0.content.0.data",
    ),
    ({"role": "user", "content": "x", "metadata": {"a": object()}}, "messages.0.metadata"),
    ({"role": "user", "content": "x", "metadata": "not an object"}, "messages.0.metadata"),
    ({"role": "user", "content": "x", "metadata": {"nan": float("nan")}}, "messages.0.metadata"),
    ({"role": "user", "content": "nul \x00 byte"}, "messages.0.content"),
    ({"role": "user", "content": "lone \ud800 surrogate"}, "messages.0.content"),
    ({"role": "user", "content": "x", "status": "weird"}, "messages.0.status"),
    ({"role": "user", "content": "x", "unknown_field": 1}, "messages.0.unknown_field"),
    ({"role": "user", "content": "x", "key": ""}, "messages.0.key"),
    ({"role": "user", "content": "x", "key": "k\x00"}, "messages.0.key"),
    ({"role": "user", "content": "x", "key": "k\udfff"}, "messages.0.key"),
    ({"role": "assistant", "content": "x", "model": "m\x00"}, "messages.0.model"),
    ({"role": "assistant", "content": "x", "model": "\ud800m"}, "messages.0.model"),
    ({"role": "user", "content": "x", "usage": {"t\ud800": 1}}, "messages.0.usage"),
    ({"role": "user", "content": "x", "metadata": {"a": "b\x00"}}, "messages.0.metadata"),
    ({"role": "user", "content": "é\ud800"}, "messages.0.content"),
    ({"role": "user", "content": "x", "native": {"format": "f"}}, "messages.0.native.data"),
]


@pytest.mark.parametrize(("message", "field"), BAD_MESSAGES, ids=[f for _, f in BAD_MESSAGES])
async def test_bad_message_names_field_and_writes_nothing(
    alice: Scope, message: dict[str, Any], field: str
) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    with pytest.raises(InvalidInputError) as err:
        await alice.append_messages(run.id, [{"role": "user", "content": "ok"}, message])
    assert isinstance(err.value, ValueError)
    assert err.value.field is not None and (err.value.field + ".").startswith(
        field.replace("0", "1", 1) + "."
    )
    assert field.replace("0", "1", 1) in str(err.value)
    assert await alice.transcript(conv.id) == []


def _deep(n: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(n):
        value = {"x": value}
    return value


async def test_other_bad_arguments(alice: Scope) -> None:
    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    cases = [
        (lambda: alice.start_conversation("t" * 201), "title"),
        (lambda: alice.start_conversation(metadata=[1]), "metadata"),  # type: ignore[arg-type]
        (lambda: alice.start_conversation(metadata=_deep(MAX_JSON_DEPTH + 1)), "metadata"),
        (lambda: alice.get_conversation("not-a-uuid"), "conversation_id"),
        (lambda: alice.get_history(123), "history_id"),  # type: ignore[arg-type]
        (lambda: alice.get_message(""), "message_id"),
        (lambda: alice.start_history(conv.id, model=""), "model"),
        (lambda: alice.start_history(conv.id, model="m", system_prompts="one"), "system_prompts"),
        (lambda: alice.start_history(conv.id, model="m", system_prompts=[1]), "system_prompts.0"),  # type: ignore[list-item]
        (lambda: alice.append_messages(run.id, "hello"), "messages"),  # type: ignore[arg-type]
        (lambda: alice.append_messages(run.id, [{"role": "user", "content": "x"}] * 1001), "messages"),
        (lambda: alice.append_messages(run.id, [42]), "messages.0"),  # type: ignore[list-item]
        (lambda: alice.update_conversation(conv.id, pinned="yes"), "pinned"),  # type: ignore[arg-type]
        (lambda: alice.finish_history(run.id, usage={"t": {1, 2}}), "usage"),  # type: ignore[dict-item]
    ]
    for call, field in cases:
        with pytest.raises(InvalidInputError) as err:
            await call()
        assert err.value.field == field, (field, err.value)
    assert (await alice.get_history(run.id)).status == "running"
    assert (await alice.list_conversations()).items[0].title is None


def test_new_message_constructor_raises_invalid_input() -> None:
    with pytest.raises(InvalidInputError) as err:
        NewMessage("robot", "x")  # type: ignore[arg-type]
    assert err.value.field == "role"
    with pytest.raises(InvalidInputError):
        NewMessage("user", "x", model="gpt")
    assert NewMessage("user", "x").text == "x"


class _Text(str):
    pass


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from(["system", "user", "assistant", "tool", "robot", "", "User"])
    | st.text(max_size=12)
    | st.builds(_Text, st.sampled_from(["user", "tool"])),
    content=st.text() | st.builds(_Text, st.text(max_size=5)) | st.sampled_from(["a\x00b", "\ud800"]),
)
def test_a_plain_new_message_is_what_validation_makes(role: Any, content: Any) -> None:
    """``NewMessage(role, text)`` takes a shorter way than keywords do; it must end where they do:
    the same fields in the same order, the same fields set, the same errors."""

    def build(call: Any) -> Any:
        try:
            m = call()
        except InvalidInputError as err:
            return ("refused", err.field, str(err))
        return (list(m.__dict__.items()), m.model_fields_set, m.__pydantic_extra__, m.__pydantic_private__)

    plain = build(lambda: NewMessage(role, content))
    assert plain == build(lambda: NewMessage(role=role, content=content))
    if plain[0] != "refused":
        m = NewMessage(role, content)
        validated = NewMessage.model_validate({"role": role, "content": content})
        assert type(m.role) is str and type(m.content) is str
        assert (m, hash(m), repr(m)) == (validated, hash(validated), repr(validated))
        assert m.model_copy(update={"key": "k"}).model_fields_set == {"role", "content", "key"}
        assert m.model_fields_set == {"role", "content"}


class _Tagged(NewMessage):
    """An application's own message class: a field of its own, a validator and a check."""

    tag: str = "plain"
    _seen: int = PrivateAttr(default=0)

    @field_validator("content")
    @classmethod
    def _stripped(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    def _check(self) -> None:
        super()._check()
        if self.content == "forbidden":
            raise InvalidInputError("content", "is forbidden here")


def test_a_subclass_built_positionally_is_what_validation_makes() -> None:
    """``Sub(role, text)`` is validated as ``Sub(role=..., content=...)`` is: the subclass's own
    fields, private attributes, validators and checks all apply (the plain ``NewMessage(role,
    text)`` shortcut knows only ``NewMessage``'s own fields)."""
    by_keyword = _Tagged(role="user", content="  hi  ")
    positional = _Tagged("user", "  hi  ")
    assert positional == by_keyword
    assert (positional.tag, positional.content, positional._seen) == ("plain", "hi", 0)
    with pytest.raises(InvalidInputError, match="forbidden"):
        _Tagged("user", "forbidden")


async def test_limits_are_configurable(db_url: str) -> None:
    limits = Limits(title=5, content=10, messages_per_call=2, inline_bytes=3)
    async with ChatMemory.open(db_url, limits=limits) as memory:
        chat = memory.scoped(Principal("alice"))
        with pytest.raises(InvalidInputError):
            await chat.start_conversation("123456")
        conv = await chat.start_conversation("12345")
        run = await chat.start_history(conv.id, model="m")
        for batch in (
            [{"role": "user", "content": "x" * 11}],
            [{"role": "user", "content": "x"}] * 3,
            [{"role": "user", "content": [{"type": "audio", "data": "aGVsbG8=", "media_type": "audio/wav"}]}],
        ):
            with pytest.raises(InvalidInputError):
                await chat.append_messages(run.id, batch)
        assert len(await chat.append_messages(run.id, [{"role": "user", "content": "x" * 10}] * 2)) == 2
        # The limit holds the same for built messages as for mappings, at its edge either way.
        for content in ("é" * 11, "x" * 11, [{"type": "text", "text": "x" * 11}]):
            with pytest.raises(InvalidInputError) as err:
                await chat.append_messages(run.id, [NewMessage("user", "ok"), NewMessage("user", content)])
            assert err.value.field == "messages.1.content"
        at_limit = [NewMessage("user", "é" * 10), NewMessage("user", "x" * 10)]
        stored = await chat.append_messages(run.id, at_limit)
        assert [m.content for m in stored] == ["é" * 10, "x" * 10]
        assert len(await chat.transcript(conv.id)) == 4


async def test_forged_cursors_and_odd_arguments(alice: Scope) -> None:
    from chatmemory import _cursor

    conv = await alice.start_conversation()
    run = await alice.start_history(conv.id, model="m")
    (pending,) = await alice.append_messages(
        run.id, [{"role": "assistant", "content": "", "status": "pending"}]
    )
    for cursor in (
        _cursor.encode("c", True, "2026-01-01T00:00:00", str(conv.id)),  # naive time
        _cursor.encode("c", True, "9999-99-99", str(conv.id)),
    ):
        with pytest.raises(InvalidInputError):
            await alice.list_conversations(cursor=cursor)
    for cursor in (_cursor.encode("m+", 2**70), _cursor.encode("m+", True)):
        with pytest.raises(InvalidInputError):
            await alice.list_messages(conversation_id=conv.id, cursor=cursor)
    with pytest.raises(InvalidInputError):
        await alice.fail_message(pending.id, error=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        Principal("\ud800")
    assert (await alice.get_message(pending.id)).status == "pending"
