"""Arbitrary input to every write call and to search: stored exactly, or rejected with nothing written.

Each call either succeeds and reads back exactly what was given, or raises
``InvalidInputError`` and leaves the store as it was; no other exception ever escapes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chatmemory import ChatMemory, InvalidInputError, Principal
from chatmemory._cursor import encode
from chatmemory._validation import MAX_JSON_DEPTH
from chatmemory.scope import Scope

T = TypeVar("T")

FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

STORABLE = [
    "",
    " ",
    "'; DROP TABLE chat_messages; --",
    '" OR 1=1 --',
    "%' UNION SELECT * FROM chat_conversations --",
    "NEAR(a b) OR c* AND -d ^e",
    "a:* & !b | c <-> d",
    "\\",
    "\u202e\u200b\ufeff",
    "🦜" * 3,
    "ǅ" + "é" * 2,
]
UNSTORABLE = ["\x00", "a\x00b", "\ud800", "x\udfffy"]
NASTY = STORABLE + UNSTORABLE


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly valid, so that calls with several arguments still succeed often enough."""
    # A middle value: hypothesis favours the ends of a range, which would favour ``bad``.
    return st.integers(0, 6).flatmap(lambda pick: bad if pick == 3 else good)


GOOD_CHAR = st.characters(codec="utf-8", exclude_characters="\x00")
ANY_CHAR = st.characters(codec=None, exclude_categories=())
GOOD_SMALL = st.one_of(st.text(GOOD_CHAR, max_size=12), st.sampled_from(STORABLE))
SMALL_TEXT = _mostly(
    GOOD_SMALL, st.one_of(st.text(ANY_CHAR, min_size=1, max_size=12), st.sampled_from(NASTY))
)
HUGE = st.builds(
    lambda unit, n: unit * n,
    st.sampled_from(["x", "é", "🦜", "\x00"]),
    st.sampled_from([199, 200, 201, 100_000, 100_001]),
)
TEXT = _mostly(SMALL_TEXT, HUGE)
# Any finite float: JSON columns keep the text as written, so 1e23 comes back as a float.
FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def _json(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), FLOATS, text)
    return st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=8,
    )


GOOD_JSON = _json(GOOD_SMALL)
JSON = _json(SMALL_TEXT)


def _nest(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


ODD = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 10**600, b"bytes", {1, 2}, object()]),
    st.builds(tuple, st.lists(GOOD_JSON, max_size=2)),
    st.dictionaries(st.integers(), GOOD_JSON, min_size=1, max_size=2),
    st.integers(min_value=MAX_JSON_DEPTH - 4, max_value=MAX_JSON_DEPTH + 6).map(_nest),
)
VALUE = st.recursive(
    st.one_of(JSON, ODD),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SMALL_TEXT, inner, max_size=3),
    max_leaves=6,
)
WRONG = st.one_of(st.integers(), st.floats(), st.binary(max_size=4), st.lists(st.integers(), max_size=2))
OBJECT = _mostly(
    st.one_of(st.none(), st.dictionaries(GOOD_SMALL, GOOD_JSON, max_size=4)),
    st.one_of(st.dictionaries(SMALL_TEXT, VALUE, min_size=1, max_size=4), VALUE),
)

B64 = st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode())
GOOD_PARTS = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries({"type": st.sampled_from(["image", "audio", "file"]), "url": SMALL_TEXT}),
    st.fixed_dictionaries({"type": st.just("image"), "data": B64, "media_type": SMALL_TEXT.filter(bool)}),
    st.fixed_dictionaries(
        {"type": st.just("file"), "data": B64, "media_type": SMALL_TEXT.filter(bool), "filename": SMALL_TEXT}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_call"),
            "id": SMALL_TEXT,
            "name": SMALL_TEXT,
            "arguments": st.one_of(SMALL_TEXT, st.dictionaries(SMALL_TEXT, JSON, max_size=3)),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool_result"), "call_id": SMALL_TEXT, "content": TEXT, "is_error": st.booleans()}
    ),
    st.fixed_dictionaries({"type": st.just("reasoning"), "text": SMALL_TEXT}),
)
BAD_PARTS = st.one_of(
    st.sampled_from(
        [
            {"type": "video", "url": "u"},
            {"type": "image"},
            {"type": "image", "url": "u", "data": "AA==", "media_type": "x"},
            {"type": "image", "data": "not base64!", "media_type": "x"},
            {"type": "image", "data": "AA=="},
            {"type": "text"},
            {"type": "text", "text": 5},
            {"type": "text", "text": "x", "extra": 1},
            {"type": "tool_call", "id": "1", "name": "n", "arguments": 5},
            {"text": "no type"},
        ]
    ),
    st.dictionaries(SMALL_TEXT, VALUE, max_size=3),
    VALUE,
)
PARTS = st.lists(_mostly(GOOD_PARTS, BAD_PARTS), max_size=3)
CONTENT = _mostly(st.one_of(TEXT, PARTS), WRONG)
ROLES = ["user", "assistant", "system", "tool"]
ROLE = _mostly(st.sampled_from(ROLES), st.sampled_from(["robot", "", "USER"]))
GOOD_MESSAGE = st.fixed_dictionaries(
    {"role": ROLE, "content": st.one_of(TEXT, PARTS)},
    optional={
        "model": st.one_of(st.none(), SMALL_TEXT),
        "status": _mostly(st.sampled_from(["complete", "pending", "error"]), st.just("done")),
        "usage": OBJECT,
        "metadata": OBJECT,
        "native": _mostly(st.fixed_dictionaries({"format": SMALL_TEXT.filter(bool), "data": JSON}), VALUE),
        "key": _mostly(st.one_of(st.none(), GOOD_SMALL.filter(bool)), st.text(min_size=256, max_size=300)),
    },
)
MESSAGE = _mostly(
    GOOD_MESSAGE,
    st.one_of(
        GOOD_MESSAGE.map(lambda m: {**m, "unexpected": 1}),
        st.fixed_dictionaries({"role": ROLE, "content": CONTENT}),
        st.dictionaries(st.one_of(SMALL_TEXT, st.integers()), VALUE, max_size=3),
        WRONG,
    ),
)
MESSAGES = _mostly(st.lists(MESSAGE, max_size=4), st.one_of(MESSAGE, st.text(max_size=3), st.none()))


async def _attempt(call: Callable[[], Awaitable[T]]) -> T | InvalidInputError:
    """The call's result, or the InvalidInputError it raised; any other exception fails the test."""
    try:
        result = await call()
    except InvalidInputError as exc:
        error = exc
    else:
        event("stored")
        return result
    event(f"rejected: {error.field}")
    assert error.reason and str(error).startswith("invalid ")
    return error


async def _everything(scope: Scope) -> list[Any]:
    """All of a principal's conversations, histories and messages, for before/after comparison."""
    page = await scope.list_conversations(limit=1000, archived=None)
    return [(await scope.get_conversation(c.id, messages=True)).model_dump() for c in page.items]


def _expected_part(part: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, dict[str, Any]] = {"tool_call": {"arguments": {}}, "tool_result": {"is_error": False}}
    return {k: v for k, v in {**defaults.get(part["type"], {}), **part}.items() if v is not None}


def _check_stored(given: dict[str, Any], stored: Any, history_model: str) -> None:
    content = given["content"]
    if isinstance(content, str):
        assert stored.content == content and stored.parts is None
    else:
        assert [p.model_dump(exclude_none=True) for p in stored.parts] == [_expected_part(p) for p in content]
        texts = [p.get("text") if p["type"] == "text" else p.get("content") for p in content]
        assert stored.content == "\n".join(t for p, t in zip(content, texts, strict=True) if t is not None)
    assert stored.role == given["role"]
    expected_model = (given.get("model") or history_model) if given["role"] == "assistant" else None
    assert stored.model == expected_model
    assert stored.status == given.get("status", "complete")
    assert stored.usage == given.get("usage") and stored.metadata == given.get("metadata")
    native = given.get("native")
    assert (stored.native.model_dump() if stored.native else None) == native
    assert stored.key == given.get("key")


@pytest.fixture
async def conversation(alice: Scope) -> Any:
    return await alice.start_conversation("fuzz")


@FUZZ
@given(title=_mostly(st.one_of(st.none(), TEXT), WRONG), metadata=OBJECT)
async def test_start_conversation(alice: Scope, title: Any, metadata: Any) -> None:
    before = await _everything(alice)
    result = await _attempt(lambda: alice.start_conversation(title, metadata=metadata))
    if isinstance(result, InvalidInputError):
        assert await _everything(alice) == before
        return
    stored = await alice.get_conversation(result.id)
    assert stored.title == title and stored.metadata == (metadata or {})
    assert (
        stored.model_dump(exclude={"message_count", "last_message_preview", "histories"})
        == result.model_dump()
    )


_KEEP = st.just(...)


@FUZZ
@given(
    title=_mostly(st.one_of(_KEEP, st.none(), TEXT), WRONG),
    metadata=st.one_of(_KEEP, OBJECT),
    pinned=_mostly(st.one_of(_KEEP, st.booleans()), st.one_of(WRONG, st.none())),
    archived=_mostly(st.one_of(_KEEP, st.booleans()), st.one_of(WRONG, st.none())),
)
async def test_update_conversation(
    alice: Scope, conversation: Any, title: Any, metadata: Any, pinned: Any, archived: Any
) -> None:
    before = await alice.get_conversation(conversation.id)
    changes = {
        k: v
        for k, v in {"title": title, "metadata": metadata, "pinned": pinned, "archived": archived}.items()
        if v is not ...
    }
    result = await _attempt(lambda: alice.update_conversation(conversation.id, **changes))
    after = await alice.get_conversation(conversation.id)
    if isinstance(result, InvalidInputError):
        assert after == before
        return
    assert (
        after.model_dump(exclude={"message_count", "last_message_preview", "histories"})
        == result.model_dump()
    )
    assert after.title == changes.get("title", before.title)
    assert after.metadata == ((changes["metadata"] or {}) if "metadata" in changes else before.metadata)
    assert after.pinned == changes.get("pinned", before.pinned)
    assert after.archived == changes.get("archived", before.archived)


@FUZZ
@given(
    model=_mostly(SMALL_TEXT, st.one_of(HUGE, WRONG, st.none())),
    prompts=_mostly(
        st.one_of(st.none(), st.lists(TEXT, max_size=3)), st.one_of(st.lists(WRONG), TEXT, WRONG)
    ),
    metadata=OBJECT,
)
async def test_start_history(
    alice: Scope, conversation: Any, model: Any, prompts: Any, metadata: Any
) -> None:
    before = await _everything(alice)
    result = await _attempt(
        lambda: alice.start_history(conversation.id, model=model, system_prompts=prompts, metadata=metadata)
    )
    if isinstance(result, InvalidInputError):
        assert await _everything(alice) == before
        return
    stored = await alice.get_history(result.id, messages=False)
    assert (stored.model, stored.system_prompts, stored.metadata) == (model, prompts, metadata)
    assert stored.model_dump(exclude={"messages"}) == result.model_dump()


@FUZZ
@given(
    status=_mostly(st.sampled_from(["completed", "failed", "cancelled"]), st.sampled_from(["running", ""])),
    usage=OBJECT,
    error=_mostly(st.one_of(st.none(), TEXT), WRONG),
)
async def test_finish_history(alice: Scope, conversation: Any, status: Any, usage: Any, error: Any) -> None:
    run = await alice.start_history(conversation.id, model="m")
    before = await _everything(alice)
    result = await _attempt(lambda: alice.finish_history(run.id, status=status, usage=usage, error=error))
    if isinstance(result, InvalidInputError):
        assert await _everything(alice) == before
        return
    stored = await alice.get_history(run.id, messages=False)
    assert (stored.status, stored.usage, stored.error) == (status, usage, error)
    assert stored.model_dump(exclude={"messages"}) == result.model_dump()


@FUZZ
@given(messages=MESSAGES)
async def test_append_messages(alice: Scope, conversation: Any, messages: Any) -> None:
    run = await alice.start_history(conversation.id, model="driver")
    await alice.append_messages(run.id, [{"role": "user", "content": "already there"}])
    before = await _everything(alice)
    old = await alice.transcript(conversation.id)
    result = await _attempt(lambda: alice.append_messages(run.id, messages))
    if isinstance(result, InvalidInputError):
        assert await _everything(alice) == before
        return
    transcript = await alice.transcript(conversation.id)
    assert transcript == [*old, *result]
    assert [m.seq for m in transcript] == list(range(1, len(transcript) + 1))
    for given_message, stored in zip(messages, result, strict=True):
        _check_stored(given_message, stored, "driver")
    summary = await alice.get_conversation(conversation.id)
    assert summary.message_count == len(transcript)
    assert summary.last_message_preview == transcript[-1].content[:200]


@FUZZ
@given(
    settle=st.sampled_from(["complete", "fail"]),
    content=CONTENT,
    model=_mostly(st.one_of(st.none(), SMALL_TEXT), WRONG),
    error=_mostly(TEXT, WRONG),
    role=st.sampled_from(["assistant", "user"]),
)
async def test_complete_and_fail_message(
    alice: Scope, conversation: Any, settle: str, content: Any, model: Any, error: Any, role: str
) -> None:
    run = await alice.start_history(conversation.id, model="driver")
    (pending,) = await alice.append_messages(run.id, [{"role": role, "content": "", "status": "pending"}])
    before = await _everything(alice)
    if settle == "complete":
        result = await _attempt(lambda: alice.complete_message(pending.id, content=content, model=model))
    else:
        result = await _attempt(lambda: alice.fail_message(pending.id, error=error))
    if isinstance(result, InvalidInputError):
        assert await _everything(alice) == before
        return
    stored = await alice.get_message(pending.id)
    assert stored == result
    if settle == "fail":
        assert (stored.status, stored.error, stored.content) == ("error", error, "")
        return
    _check_stored({"role": role, "content": content, "model": model}, stored, "driver")
    summary = await alice.get_conversation(conversation.id)
    assert summary.last_message_preview == stored.content[:200]


@FUZZ
@given(
    query=_mostly(TEXT, st.one_of(WRONG, st.none())),
    role=st.one_of(st.none(), ROLE),
    limit=_mostly(st.integers(1, 1000), st.one_of(st.integers(-2, 0), st.just(1001), WRONG)),
    cursor=st.one_of(st.none(), SMALL_TEXT, WRONG, st.builds(encode, st.just("s"), SMALL_TEXT, JSON)),
)
async def test_search_queries(
    memory: ChatMemory, alice: Scope, query: Any, role: Any, limit: Any, cursor: Any
) -> None:
    bob = memory.scoped(Principal("bob"))
    mine = await bob.start_conversation("bob's")
    run = await bob.start_history(mine.id, model="m")
    text = query if isinstance(query, str) else "x"
    stored = await _attempt(lambda: bob.append_messages(run.id, [{"role": "user", "content": text}]))
    result = await _attempt(lambda: alice.search_messages(query, role=role, limit=limit, cursor=cursor))
    if not isinstance(result, InvalidInputError):
        assert all(hit.message.conversation_id != mine.id for hit in result.items)
    own = await _attempt(lambda: bob.search_messages(query, conversation_id=mine.id))
    if not isinstance(own, InvalidInputError):
        assert all(hit.message.conversation_id == mine.id for hit in own.items)
        assert isinstance(stored, InvalidInputError) or len(own.items) <= 1


async def test_sql_looking_text_is_stored_and_found_as_text(alice: Scope, conversation: Any) -> None:
    run = await alice.start_history(conversation.id, model="m")
    texts = [t for t in STORABLE if t]
    stored = await alice.append_messages(run.id, [{"role": "user", "content": t} for t in texts])
    assert [m.content for m in await alice.transcript(conversation.id)] == texts
    hits = await alice.search_messages("'; DROP TABLE chat_messages; --")
    assert [h.message.id for h in hits.items] == [stored[texts.index("'; DROP TABLE chat_messages; --")].id]
    union = await alice.search_messages('"UNION SELECT"')
    assert [h.message.content for h in union.items] == ["%' UNION SELECT * FROM chat_conversations --"]


# -- regressions: inputs that once escaped as a storage or driver error ---------------------------


async def test_json_that_cannot_round_trip_is_rejected(alice: Scope, conversation: Any) -> None:
    run = await alice.start_history(conversation.id, model="m")
    for bad in ({"a": (1, 2)}, {"a": 10**600}, {"a": {"b": [-(10**600)]}}):
        with pytest.raises(InvalidInputError):
            await alice.start_conversation(metadata=bad)
        with pytest.raises(InvalidInputError):
            await alice.start_history(conversation.id, model="m", metadata=bad)
        with pytest.raises(InvalidInputError):
            await alice.finish_history(run.id, usage=bad)
        with pytest.raises(InvalidInputError):
            await alice.append_messages(run.id, [{"role": "user", "content": "x", "metadata": bad}])
    big = {"a": 10**499, "b": -(10**499), "c": [1.5, -0.25]}
    conv = await alice.start_conversation(metadata=big)
    assert (await alice.get_conversation(conv.id)).metadata == big
    assert (await alice.get_history(run.id)).status == "running"


async def test_native_format_with_nul_is_rejected(alice: Scope, conversation: Any) -> None:
    run = await alice.start_history(conversation.id, model="m")
    with pytest.raises(InvalidInputError) as err:
        await alice.append_messages(
            run.id, [{"role": "user", "content": "x", "native": {"format": "a\x00", "data": 1}}]
        )
    assert err.value.field == "messages.0.native.format"
    assert await alice.transcript(conversation.id) == []


async def test_forged_cursors_are_input_errors(alice: Scope, conversation: Any) -> None:
    forged = {
        "messages": [encode("m+", 10**30), encode("m+", True), encode("m+", -1), encode("m-", 2**63)],
        "conversations": [
            encode("c", False, "2020-01-01T00:00:00", "01a20ae9-0000-7000-8000-000000000000"),
            encode("c", "yes", "2020-01-01T00:00:00+00:00", "01a20ae9-0000-7000-8000-000000000000"),
            encode("c", True, "9999-12-31T23:59:59-14:00", "01a20ae9-0000-7000-8000-000000000000"),
            encode("c", True, "2020-01-01T00:00:00+00:00", 5),
        ],
    }
    for cursor in forged["messages"]:
        newest_first = json.loads(base64.urlsafe_b64decode(cursor + "==="))[0] == "m-"
        with pytest.raises(InvalidInputError):
            await alice.list_messages(
                conversation_id=conversation.id, cursor=cursor, newest_first=newest_first
            )
    for cursor in forged["conversations"]:
        with pytest.raises(InvalidInputError):
            await alice.list_conversations(cursor=cursor)
