"""Random sequences of every scoped operation by principals of two tenants, checked against a model.

No principal ever observes another's data by any route: results, counts, previews, snippets,
error messages or cursors. Every conversation, history and message carries a unique token in
its text, so any output that mentions something invisible to the caller is caught.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from pydantic import BaseModel
from sqlalchemy import text

from chatmemory import (
    ChatMemory,
    ConflictError,
    ConversationNotFound,
    HistoryNotFound,
    MessageNotFound,
    NotFoundError,
    Principal,
)
from chatmemory._ids import new_id
from tests.conftest import _create_database

T = TypeVar("T")

PRINCIPALS = {
    "alice": Principal("alice"),
    "bob": Principal("bob"),
    "root": Principal("root", admin=True),
    "alice@acme": Principal("alice", tenant="acme"),
    "carol@acme": Principal("carol", tenant="acme"),
    "boss@acme": Principal("boss", tenant="acme", admin=True),
}
WHO = st.sampled_from(sorted(PRINCIPALS))
PICK = st.integers(min_value=0, max_value=10_000)
"""Chooses among the objects created so far, by anyone (see ``Isolation.pick``)."""
WORDS = ["apple", "rome", "hotel", "zebra"]
PREVIEW = 200
MACHINE = settings(
    max_examples=10,
    stateful_step_count=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


def _token(prefix: str) -> str:
    return prefix + secrets.token_hex(5)


@dataclass
class Conv:
    id: uuid.UUID
    owner: Principal
    token: str
    title: str
    pinned: bool = False
    archived: bool = False
    deleted: bool = False


@dataclass
class Run:
    id: uuid.UUID
    conv: Conv
    token: str
    status: str = "running"
    deleted: bool = False


@dataclass
class Msg:
    id: uuid.UUID
    run: Run
    seq: int
    token: str
    content: str
    status: str
    key: str | None
    deleted: bool = False


def visible(p: Principal, conv: Conv) -> bool:
    owner = conv.owner
    return not conv.deleted and owner.tenant == p.tenant and (p.admin or owner.id == p.id)


@dataclass
class Model:
    convs: dict[uuid.UUID, Conv] = field(default_factory=dict)
    runs: dict[uuid.UUID, Run] = field(default_factory=dict)
    msgs: dict[uuid.UUID, Msg] = field(default_factory=dict)

    def live_messages(self, conv: Conv) -> list[Msg]:
        return sorted(
            (m for m in self.msgs.values() if m.run.conv is conv and not m.deleted and not m.run.deleted),
            key=lambda m: m.seq,
        )

    def run_visible(self, p: Principal, run: Run) -> bool:
        return visible(p, run.conv) and not run.deleted

    def msg_visible(self, p: Principal, msg: Msg) -> bool:
        return self.run_visible(p, msg.run) and not msg.deleted

    def hidden_marks(self, p: Principal) -> Iterator[str]:
        """Tokens and ids of everything ``p`` must not observe."""
        for conv in self.convs.values():
            if not visible(p, conv):
                yield from (conv.token, str(conv.id))
        for run in self.runs.values():
            if not self.run_visible(p, run):
                yield from (run.token, str(run.id))
        for msg in self.msgs.values():
            if not self.msg_visible(p, msg):
                yield from (msg.token, str(msg.id))


class Isolation(RuleBasedStateMachine):
    def __init__(self, memory: ChatMemory, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.memory = memory
        self.loop = loop
        self.model = Model()
        self.seq: dict[uuid.UUID, int] = {}
        self.run(_wipe(memory))

    @initialize()
    def seed(self) -> None:
        """Every principal starts with a conversation, a running history and two messages."""
        for who in sorted(PRINCIPALS):
            self.start_conversation(who)
            conv = list(self.model.convs.values())[-1]
            self.start_history(who, len(self.model.convs) - 1)
            run = list(self.model.runs.values())[-1]
            assert run.conv is conv
            batch = [(None, "complete", ["apple", "rome"], 0), ("k1", "pending", ["hotel"], 0)]
            self.append_messages(who, len(self.model.runs) - 1, batch)

    @staticmethod
    def pick(objects: dict[uuid.UUID, T], index: int) -> T:
        """One of the objects created so far (never empty: ``seed`` creates some of each)."""
        values = list(objects.values())
        return values[index % len(values)]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def scope(self, who: str) -> Any:
        return self.memory.scoped(PRINCIPALS[who])

    def seen(self, who: str, result: object) -> None:
        """Fail if ``result`` mentions anything invisible to ``who``."""
        dumped = _dump(result)
        for mark in self.model.hidden_marks(PRINCIPALS[who]):
            assert mark not in dumped, f"{who} observed {mark}"

    def missing(
        self, op: Callable[[Any], Awaitable[object]], real: uuid.UUID, cls: type[NotFoundError]
    ) -> None:
        """``op(real)`` fails exactly as ``op`` on an id that never existed, but for the id."""
        fake = new_id()
        errors = []
        for target in (real, fake):
            with pytest.raises(cls) as caught:
                self.run(op(target))  # type: ignore[arg-type]
            assert type(caught.value) is cls
            errors.append(str(caught.value).replace(str(target), "<id>"))
        assert errors[0] == errors[1]

    # -- writes ----------------------------------------------------------------------------------

    @rule(who=WHO)
    def start_conversation(self, who: str) -> None:
        token = _token("c")
        result = self.run(self.scope(who).start_conversation(f"{token} title", metadata={"t": token}))
        conv = Conv(result.id, PRINCIPALS[who], token, f"{token} title")
        self.model.convs[conv.id] = conv
        self.seq[conv.id] = 0

    @rule(who=WHO, conv_pick=PICK, pinned=st.booleans(), archived=st.booleans())
    def update_conversation(self, who: str, conv_pick: int, pinned: bool, archived: bool) -> None:
        conv = self.pick(self.model.convs, conv_pick)
        chat = self.scope(who)
        if not visible(PRINCIPALS[who], conv):
            self.missing(lambda i: chat.update_conversation(i, pinned=pinned), conv.id, ConversationNotFound)
            return
        result = self.run(chat.update_conversation(conv.id, pinned=pinned, archived=archived))
        conv.pinned, conv.archived = pinned, archived
        assert (result.pinned, result.archived, result.title) == (pinned, archived, conv.title)
        self.seen(who, result)

    @rule(who=WHO, conv_pick=PICK)
    def delete_conversation(self, who: str, conv_pick: int) -> None:
        conv = self.pick(self.model.convs, conv_pick)
        chat = self.scope(who)
        if not visible(PRINCIPALS[who], conv):
            self.missing(chat.delete_conversation, conv.id, ConversationNotFound)
            return
        self.run(chat.delete_conversation(conv.id))
        conv.deleted = True

    @rule(who=WHO, conv_pick=PICK)
    def start_history(self, who: str, conv_pick: int) -> None:
        conv = self.pick(self.model.convs, conv_pick)
        chat = self.scope(who)
        token = _token("h")
        if not visible(PRINCIPALS[who], conv):
            self.missing(lambda i: chat.start_history(i, model=token), conv.id, ConversationNotFound)
            return
        result = self.run(chat.start_history(conv.id, model=token))
        self.seen(who, result)
        run = Run(result.id, conv, token)
        self.model.runs[run.id] = run

    @rule(who=WHO, run_pick=PICK, status=st.sampled_from(["completed", "failed", "cancelled"]))
    def finish_history(self, who: str, run_pick: int, status: str) -> None:
        run = self.pick(self.model.runs, run_pick)
        chat = self.scope(who)
        if not self.model.run_visible(PRINCIPALS[who], run):
            self.missing(lambda i: chat.finish_history(i, status=status), run.id, HistoryNotFound)
        elif run.status != "running":
            with pytest.raises(ConflictError):
                self.run(chat.finish_history(run.id, status=status))
        else:
            self.seen(who, self.run(chat.finish_history(run.id, status=status, usage={"t": run.token})))
            run.status = status

    @rule(who=WHO, run_pick=PICK)
    def delete_history(self, who: str, run_pick: int) -> None:
        run = self.pick(self.model.runs, run_pick)
        chat = self.scope(who)
        if not self.model.run_visible(PRINCIPALS[who], run):
            self.missing(chat.delete_history, run.id, HistoryNotFound)
            return
        self.run(chat.delete_history(run.id))
        run.deleted = True

    @rule(
        who=WHO,
        run_pick=PICK,
        batch=st.lists(
            st.tuples(
                st.sampled_from([None, "k1", "k2"]),
                st.sampled_from(["complete", "pending"]),
                st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
                st.sampled_from([0, 0, 250]),
            ),
            min_size=1,
            max_size=3,
            unique_by=lambda item: item[0] or secrets.token_hex(),
        ),
    )
    def append_messages(self, who: str, run_pick: int, batch: list[tuple[Any, ...]]) -> None:
        run = self.pick(self.model.runs, run_pick)
        chat = self.scope(who)
        items = []
        for key, status, words, padding in batch:
            token = _token("m")
            content = f"{token} {' '.join(words)}" + " x" * (padding // 2) if status == "complete" else ""
            items.append((token, content, status, key))
        sent = [{"role": "user", "content": c, "status": s, "key": k} for _, c, s, k in items]
        if not self.model.run_visible(PRINCIPALS[who], run):
            self.missing(lambda i: chat.append_messages(i, sent), run.id, HistoryNotFound)
            return
        if run.status != "running":
            with pytest.raises(ConflictError):
                self.run(chat.append_messages(run.id, sent))
            return
        result = self.run(chat.append_messages(run.id, sent))
        self.seen(who, result)
        live_keys = {
            m.key: m for m in self.model.msgs.values() if m.run is run and not m.deleted and m.key is not None
        }
        for (token, content, status, key), stored in zip(items, result, strict=True):
            if key in live_keys:
                assert stored.id == live_keys[key].id
                continue
            self.seq[run.conv.id] += 1
            assert stored.seq == self.seq[run.conv.id] and stored.content == content
            self.model.msgs[stored.id] = Msg(stored.id, run, stored.seq, token, content, status, key)

    @rule(who=WHO, msg_pick=PICK, action=st.sampled_from(["complete", "fail", "delete"]))
    def settle_message(self, who: str, msg_pick: int, action: str) -> None:
        msg = self.pick(self.model.msgs, msg_pick)
        chat = self.scope(who)
        call: dict[str, Callable[[Any], Awaitable[object]]] = {
            "complete": lambda i: chat.complete_message(i, content=f"{msg.token} done apple"),
            "fail": lambda i: chat.fail_message(i, error=f"{msg.token} failed"),
            "delete": chat.delete_message,
        }
        if not self.model.msg_visible(PRINCIPALS[who], msg):
            self.missing(call[action], msg.id, MessageNotFound)
        elif action == "delete":
            self.run(call[action](msg.id))
            msg.deleted = True
        elif msg.status != "pending":
            with pytest.raises(ConflictError):
                self.run(call[action](msg.id))
        else:
            self.seen(who, self.run(call[action](msg.id)))
            msg.status = "complete" if action == "complete" else "error"
            msg.content = f"{msg.token} done apple" if action == "complete" else ""

    # -- reads -----------------------------------------------------------------------------------

    @rule(who=WHO, conv_pick=PICK)
    def read_conversation(self, who: str, conv_pick: int) -> None:
        conv = self.pick(self.model.convs, conv_pick)
        chat = self.scope(who)
        p = PRINCIPALS[who]
        if not visible(p, conv):
            for op in (
                lambda i: chat.get_conversation(i, messages=True),
                chat.transcript,
                lambda i: chat.list_messages(conversation_id=i),
                chat.get_context,
                lambda i: chat.search_messages("apple", conversation_id=i),
            ):
                self.missing(op, conv.id, ConversationNotFound)
            return
        live = self.model.live_messages(conv)
        detail = self.run(chat.get_conversation(conv.id, messages=True))
        self.seen(who, detail)
        assert detail.message_count == len(live)
        assert detail.last_message_preview == (live[-1].content[:PREVIEW] if live else None)
        runs = {r.id for r in self.model.runs.values() if r.conv is conv and not r.deleted}
        assert {h.id for h in detail.histories} == runs
        stored = sorted((m for h in detail.histories for m in h.messages or []), key=lambda m: m.seq)
        assert [(m.id, m.content, m.status) for m in stored] == [(m.id, m.content, m.status) for m in live]
        transcript = self.run(chat.transcript(conv.id))
        assert [m.id for m in transcript] == [m.id for m in live]
        context = self.run(chat.get_context(conv.id))
        complete = [m.id for m in live if m.status == "complete"]
        assert [m.id for m in context.messages] == complete[len(complete) - len(context.messages) :]
        assert context.omitted == len(complete) - len(context.messages)
        self.seen(who, context)

    @rule(who=WHO, run_pick=PICK)
    def read_run(self, who: str, run_pick: int) -> None:
        run = self.pick(self.model.runs, run_pick)
        chat = self.scope(who)
        p = PRINCIPALS[who]
        if self.model.run_visible(p, run):
            detail = self.run(chat.get_history(run.id))
            self.seen(who, detail)
            live = [m.id for m in self.model.live_messages(run.conv) if m.run is run]
            assert [m.id for m in detail.messages or []] == live
        else:
            self.missing(chat.get_history, run.id, HistoryNotFound)
            self.missing(lambda i: chat.list_messages(history_id=i), run.id, HistoryNotFound)

    @rule(who=WHO, msg_pick=PICK)
    def read_message(self, who: str, msg_pick: int) -> None:
        msg = self.pick(self.model.msgs, msg_pick)
        chat = self.scope(who)
        if self.model.msg_visible(PRINCIPALS[who], msg):
            got = self.run(chat.get_message(msg.id))
            assert (got.content, got.status, got.seq) == (msg.content, msg.status, msg.seq)
        else:
            self.missing(chat.get_message, msg.id, MessageNotFound)

    @rule(who=WHO, other=WHO, limit=st.integers(1, 3), archived=st.sampled_from([False, True, None]))
    def list_conversations(self, who: str, other: str, limit: int, archived: bool | None) -> None:
        p = PRINCIPALS[who]
        expected = {
            c.id: c
            for c in self.model.convs.values()
            if visible(p, c) and (archived is None or c.archived == archived)
        }
        items, cursors = _pages(
            lambda cursor: self.scope(who).list_conversations(limit=limit, cursor=cursor, archived=archived),
            self.run,
        )
        self.seen(who, items)
        assert [c.id for c in items] == list(dict.fromkeys(c.id for c in items))
        assert {c.id for c in items} == set(expected)
        keys = [(c.pinned, c.updated_at, c.id) for c in items]
        assert keys == sorted(keys, reverse=True)
        for c in items:
            live = self.model.live_messages(expected[c.id])
            assert c.message_count == len(live) and c.title == expected[c.id].title
            assert c.last_message_preview == (live[-1].content[:PREVIEW] if live else None)
        for cursor in cursors:  # another principal replaying the cursor sees only its own
            page = self.run(
                self.scope(other).list_conversations(limit=limit, cursor=cursor, archived=archived)
            )
            self.seen(other, page)

    @rule(who=WHO, other=WHO, conv_pick=PICK, limit=st.integers(1, 3), newest_first=st.booleans())
    def list_messages(self, who: str, other: str, conv_pick: int, limit: int, newest_first: bool) -> None:
        conv = self.pick(self.model.convs, conv_pick)
        if not visible(PRINCIPALS[who], conv):
            return
        items, cursors = _pages(
            lambda cursor: self.scope(who).list_messages(
                conversation_id=conv.id, limit=limit, cursor=cursor, newest_first=newest_first
            ),
            self.run,
        )
        live = [m.id for m in self.model.live_messages(conv)]
        assert [m.id for m in items] == (live[::-1] if newest_first else live)
        self.seen(who, items)
        for cursor in cursors:
            if not visible(PRINCIPALS[other], conv):
                self.missing(
                    lambda i, c=cursor: self.scope(other).list_messages(  # type: ignore[misc]
                        conversation_id=i, cursor=c, newest_first=newest_first
                    ),
                    conv.id,
                    ConversationNotFound,
                )

    @rule(who=WHO, other=WHO, word=st.sampled_from(WORDS), limit=st.integers(1, 3))
    def search(self, who: str, other: str, word: str, limit: int) -> None:
        p = PRINCIPALS[who]
        expected = {
            m.id
            for m in self.model.msgs.values()
            if self.model.msg_visible(p, m) and word in m.content.split()
        }
        items, cursors = _pages(
            lambda cursor: self.scope(who).search_messages(word, limit=limit, cursor=cursor), self.run
        )
        self.seen(who, items)
        assert sorted(h.message.id for h in items) == sorted(expected)
        assert all(f"\u00ab{word}\u00bb" in h.snippet for h in items)
        for cursor in cursors:
            self.seen(other, self.run(self.scope(other).search_messages(word, limit=limit, cursor=cursor)))

    @rule(who=WHO, msg_pick=PICK)
    def search_token(self, who: str, msg_pick: int) -> None:
        msg = self.pick(self.model.msgs, msg_pick)
        """A message's own token finds it, for those who may see it, and for no one else."""
        hits = self.run(self.scope(who).search_messages(msg.token)).items
        self.seen(who, hits)
        wanted = [msg.id] if self.model.msg_visible(PRINCIPALS[who], msg) and msg.token in msg.content else []
        assert [h.message.id for h in hits] == wanted


def _dump(result: object) -> str:
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    if isinstance(result, list | tuple):
        return "".join(_dump(item) for item in result)
    return repr(result)


def _pages(
    fetch: Callable[[str | None], Awaitable[Any]], run: Callable[[Any], Any]
) -> tuple[list[Any], list[str]]:
    """Every item of a listing, page by page, and the cursors it handed out."""
    items: list[Any] = []
    cursors: list[str] = []
    cursor = None
    while True:
        page = run(fetch(cursor))
        items.extend(page.items)
        if page.next_cursor is None:
            assert not page.has_more
            return items, cursors
        cursor = page.next_cursor
        cursors.append(cursor)


async def _open(url: str) -> ChatMemory:
    return await ChatMemory.open(url)


async def _wipe(memory: ChatMemory) -> None:
    """Empty every table (a fresh database for each example, without re-creating it)."""
    async with memory.engine.begin() as conn:
        for table in ("chat_messages", "chat_histories", "chat_conversations"):
            await conn.execute(text(f"DELETE FROM {table}"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_no_principal_observes_another(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    loop = asyncio.new_event_loop()
    try:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'chat.db'}"
        else:
            url = loop.run_until_complete(_create_database(request.getfixturevalue("postgres_url")))
        memory = loop.run_until_complete(_open(url))
        try:
            run_state_machine_as_test(lambda: Isolation(memory, loop), settings=MACHINE)
        finally:
            loop.run_until_complete(memory.close())
    finally:
        loop.close()
