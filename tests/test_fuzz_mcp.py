"""Arbitrary arguments to every MCP tool: a result or a tool error, never a crash or a leak.

A tool error names what was wrong with the call; it never carries SQL, a stack trace, or
anything of another principal (bob calls with alice's ids and sees only "not found").
"""

from __future__ import annotations

from typing import Any

from chatmemory_mcp import build_server
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp import Client

from chatmemory import ChatMemory, Principal
from chatmemory._ids import new_id

FUZZ = settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
TOOLS = {
    "start_conversation": ["title", "metadata"],
    "list_conversations": ["limit", "cursor", "archived"],
    "get_conversation": ["conversation_id", "limit", "cursor"],
    "update_conversation": ["conversation_id", "title", "metadata", "pinned", "archived"],
    "delete_conversation": ["conversation_id"],
    "start_history": ["conversation_id", "model", "agent", "system_prompts", "metadata"],
    "finish_history": ["history_id", "status", "usage", "error"],
    "append_messages": ["history_id", "messages"],
    "list_messages": ["conversation_id", "history_id", "limit", "cursor", "newest_first", "max_chars"],
    "search_messages": ["query", "conversation_id", "history_id", "role", "limit", "cursor"],
    "get_context": ["conversation_id", "max_tokens", "max_messages"],
    "record_run": ["model", "messages", "conversation_id", "title", "status", "usage", "agent", "metadata"],
    "delete_message": ["message_id"],
    "delete_history": ["history_id"],
    "export_conversation": ["conversation_id"],
}
FORBIDDEN = ["Traceback", 'File "', "sqlalchemy", "asyncpg", "sqlite3", "SELECT ", "INSERT ", "psycopg"]
SECRET = "zanzibar"
# No lone surrogates: the client cannot encode them (the store's own fuzz tests cover them).
TEXT = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=10),
    st.sampled_from(["", "\x00", "'; DROP TABLE chat_messages; --", "x" * 2000, "NEAR(a b) OR c*"]),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "robot"]), "content": st.one_of(TEXT, JSON)},
    optional={"key": TEXT, "model": TEXT, "metadata": JSON, "usage": JSON},
)


def _arguments(ids: dict[str, str], own: list[str]) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    known = st.sampled_from(sorted([*ids.values(), *own]))

    def for_tool(tool: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
        value = st.one_of(JSON, known, known, st.lists(MESSAGE, max_size=3))
        names = st.one_of(st.sampled_from(TOOLS[tool]), st.sampled_from(TOOLS[tool]), TEXT)
        return st.dictionaries(names, value, max_size=4).map(lambda args: (tool, args))

    return st.sampled_from(sorted(TOOLS)).flatmap(for_tool)


async def _alice_data(memory: ChatMemory) -> dict[str, str]:
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation(f"{SECRET} title", metadata={"s": SECRET})
    run = await alice.start_history(conv.id, model=f"{SECRET}-model")
    (msg,) = await alice.append_messages(run.id, [{"role": "user", "content": f"{SECRET} hotel rome"}])
    return {"conversation": str(conv.id), "history": str(run.id), "message": str(msg.id)}


async def _carol_data(memory: ChatMemory) -> list[str]:
    carol = memory.scoped(Principal("carol"))
    conv = await carol.start_conversation("carol's")
    run = await carol.start_history(conv.id, model="m")
    return [str(conv.id), str(run.id)]


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@FUZZ
@given(data=st.data(), as_bob=st.booleans())
async def test_tool_arguments_give_a_result_or_a_tool_error_and_never_leak(
    memory: ChatMemory, data: st.DataObject, as_bob: bool
) -> None:
    ids = await _alice_data(memory)
    alice = memory.scoped(Principal("alice"))
    before = (await alice.get_conversation(ids["conversation"], messages=True)).model_dump()
    own = await _carol_data(memory)
    tool, arguments = data.draw(_arguments(ids, own))
    principal = Principal("bob") if as_bob else Principal("carol")
    async with Client(build_server(principal=principal, memory=memory)) as client:  # type: ignore[arg-type]
        result = await client.call_tool(tool, arguments)
        text = _text(result)
        event(f"{tool}: {'error' if result.is_error else 'ok'}")
        for bad in FORBIDDEN:
            assert bad not in text, (tool, arguments, text)
        assert SECRET not in text and SECRET not in str(result.structured_content), (tool, arguments)
        if result.is_error and "not found" in text and any(i in str(arguments) for i in ids.values()):
            # Word for word what an id that never existed gets.
            fake = str(new_id())
            again = await client.call_tool(tool, _replace(arguments, ids, fake))
            assert again.is_error and _text(again) == _replace(text, ids, fake), (tool, arguments)
    # Nothing anyone else sent changed alice's conversation.
    assert (await alice.get_conversation(ids["conversation"], messages=True)).model_dump() == before


def _replace(value: Any, ids: dict[str, str], fake: str) -> Any:
    if isinstance(value, str):
        for real in ids.values():
            value = value.replace(real, fake)
        return value
    if isinstance(value, list):
        return [_replace(v, ids, fake) for v in value]
    if isinstance(value, dict):
        return {k: _replace(v, ids, fake) for k, v in value.items()}
    return value
