"""URLs, engines, SQLite settings, foreign keys, and storage errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, func, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from chatmemory import (
    ChatMemory,
    ConflictError,
    ConversationNotFound,
    HistoryNotFound,
    InvalidInputError,
    NewMessage,
    Principal,
    StorageError,
    ToolCallPart,
)
from chatmemory._db import create_engine, resolve_url
from chatmemory._schema import changes, conversations, histories, messages
from tests._postgres import _connect, create_database
from tests.test_lock_waits import locked_elsewhere


def test_plain_urls_map_to_async_drivers(tmp_path: Path) -> None:
    assert resolve_url(f"sqlite:///{tmp_path}/a/b.db").drivername == "sqlite+aiosqlite"
    assert (tmp_path / "a").is_dir()
    for url in ("postgresql://u:p@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"):
        assert resolve_url(url).drivername == "postgresql+asyncpg"
    with pytest.raises(InvalidInputError):
        resolve_url("mysql://u@h/db")
    with pytest.raises(InvalidInputError):
        resolve_url("not a url")


@pytest.mark.parametrize("given", ["sqlite:///chat.db", make_url("sqlite:///chat.db"), None])
def test_chatmemory_of_something_else_than_an_engine_says_what_it_takes(given: object) -> None:
    with pytest.raises(TypeError, match="takes a SQLAlchemy AsyncEngine") as raised:
        ChatMemory(given)  # type: ignore[arg-type]
    assert ("ChatMemory.open(url)" in str(raised.value)) is (given is not None)


def test_default_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHATMEMORY_URL", "postgresql://u@h/db")
    assert resolve_url(None).drivername == "postgresql+asyncpg"
    monkeypatch.delenv("CHATMEMORY_URL")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    url = resolve_url(None)
    assert url.database == str(tmp_path / "data" / "chatmemory" / "chatmemory.db")
    assert (tmp_path / "data" / "chatmemory").is_dir()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///file:notes?mode=memory&uri=true",
        "sqlite:///file::memory:?cache=shared&uri=true",
        "sqlite:///file:/notes?vfs=memdb&uri=true",
    ],
)
async def test_an_in_memory_store_works_and_leaves_no_file(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The store migrates and then uses one in-memory database (not one per connection), each
    open store its own, gone with it."""
    monkeypatch.chdir(tmp_path)
    async with ChatMemory.open(url) as memory, ChatMemory.open("sqlite:///:memory:") as other:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation("kept in memory")
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", "a hedgehog in memory")])
        assert [m.content for m in await alice.transcript(conv.id)] == ["a hedgehog in memory"]
        assert [h.message.content for h in (await alice.search_messages("hedgehog")).items] == [
            "a hedgehog in memory"
        ]
        assert (await other.scoped(Principal("alice")).list_conversations()).items == []
    async with ChatMemory.open(url) as again:
        assert (await again.scoped(Principal("alice")).list_conversations()).items == []
    assert list(tmp_path.iterdir()) == []


async def test_an_in_memory_store_imports_and_purges_beside_other_calls() -> None:
    """Imports and purges (which run on a connection of their own) wait for the store's other
    calls on an in-memory database, as they do on a file, instead of failing on its table locks."""
    async with ChatMemory.open("sqlite:///:memory:") as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation()
        run = await chat.start_history(conv.id, model="m")
        await chat.append_messages(run.id, [NewMessage("user", f"m{i}") for i in range(100)])
        document = await chat.export_conversation(conv.id)

        async def appends() -> None:
            for i in range(40):
                await chat.append_messages(run.id, [NewMessage("user", f"x{i}")] * 10)
                await chat.transcript(conv.id)

        async def imports() -> None:
            for _ in range(8):
                copy = await chat.import_conversation(document, new_ids=True)
                await chat.delete_conversation(copy.id)
                await memory.scoped(Principal("root", admin=True)).purge_deleted(
                    deleted_before=datetime.now(UTC)
                )

        await asyncio.wait_for(asyncio.gather(appends(), imports()), 60)
        assert len(await chat.transcript(conv.id)) == 100 + 400


async def test_open_default_creates_the_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHATMEMORY_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    async with ChatMemory.open() as memory:
        await memory.scoped(Principal("a")).start_conversation()
    assert (tmp_path / "chatmemory" / "chatmemory.db").stat().st_size > 0


async def test_sqlite_settings(tmp_path: Path) -> None:
    async with ChatMemory.open(f"sqlite:///{tmp_path}/c.db") as memory, memory.engine.connect() as conn:
        pragmas = {
            name: (await conn.execute(text(f"PRAGMA {name}"))).scalar_one()
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        }
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30000, "synchronous": 1}


async def test_foreign_keys_cascade_on_hard_delete(memory: ChatMemory) -> None:
    chat = memory.scoped(Principal("alice"))
    conv = await chat.start_conversation()
    run = await chat.start_history(conv.id, model="m")
    await chat.append_messages(run.id, [{"role": "user", "content": "x"}] * 3)
    async with memory.engine.begin() as conn:
        await conn.execute(delete(conversations).where(conversations.c.id == conv.id))
        for table in (histories, messages):
            assert (await conn.execute(select(func.count()).select_from(table))).scalar_one() == 0


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of the caller's own on a migrated database, disposed after the test."""
    async with ChatMemory.open(db_url):
        pass  # migrate
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


async def test_wrapped_engine_is_not_disposed(engine: AsyncEngine) -> None:
    async with ChatMemory(engine) as memory:
        await memory.check_schema()
        await memory.scoped(Principal("a")).start_conversation()
    # Still usable: the pool was not disposed, so its connection is still checked in.
    assert engine.pool.checkedin() >= 1
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(conversations))).scalar_one()
    assert count == 1


async def test_a_callers_engine_from_another_event_loop_works_or_is_refused_at_once(
    engine: AsyncEngine,
) -> None:
    """A caller's engine used from a thread with its own loop (as frameworks' thread pools do):
    aiosqlite serves it; asyncpg connections belong to the loop that opened them, so such a call
    is refused with StorageError before it touches one, and the engine keeps serving its own
    loop, until it is disposed and another loop may take it over."""
    memory = ChatMemory(engine)
    alice = memory.scoped(Principal("alice"))
    conv = await alice.start_conversation(title="home")

    async def elsewhere() -> str | None:
        title = (await alice.get_conversation(conv.id)).title
        await engine.dispose()  # what this loop opened, it closes
        return title

    def in_another_loop() -> str | None:
        return asyncio.run(asyncio.wait_for(elsewhere(), timeout=10))

    if engine.dialect.driver == "asyncpg":
        await alice.get_conversation(conv.id)  # the pool holds this loop's connection
        with pytest.raises(StorageError, match="another event loop"):
            await asyncio.to_thread(in_another_loop)
        connection = engine.pool.checkedin()
        for _ in range(3):  # the home loop's connection was left untouched, and serves it
            assert (await alice.get_conversation(conv.id)).title == "home"
        assert engine.pool.checkedin() == connection == 1
        await engine.dispose()
    assert await asyncio.to_thread(in_another_loop) == "home"


async def test_json_columns_read_back_through_a_callers_engine(engine: AsyncEngine) -> None:
    """The engine's own driver may hand JSON columns over already decoded (SQLAlchemy's asyncpg
    dialect does); they read back the same as through a store opened from the URL."""
    async with ChatMemory(engine) as memory:
        chat = memory.scoped(Principal("a"))
        conv = await chat.start_conversation(metadata={"topic": "owls"})
        run = await chat.start_history(conv.id, model="m", system_prompts=["be brief"])
        call = ToolCallPart(id="c1", name="lookup", arguments={"q": "owls"})
        native = {"format": "f", "data": {"raw": [1]}}
        appended = await chat.append_messages(
            run.id,
            [
                NewMessage(
                    "assistant", [call], usage={"tokens": 3}, metadata={"k": "v"}, native=native, key="a"
                ),
                NewMessage("user", "plain"),
            ],
        )
        await chat.merge_and_append({conv.id: {"step": 2}})
        found = await chat.get_conversation(conv.id)
        assert found.metadata == {"topic": "owls", "step": 2}
        assert found.histories[0].system_prompts == ["be brief"]
        # Every column of every message reads back as the append answered it.
        assert await chat.transcript(conv.id) == appended
        message = appended[0]
        assert message.parts == [call] and message.usage == {"tokens": 3} and message.metadata == {"k": "v"}
        assert message.native is not None and message.native.data == {"raw": [1]} and message.key == "a"


async def test_writes_that_keep_json_columns_work_through_a_callers_engine(engine: AsyncEngine) -> None:
    """A write that keeps a row's JSON columns as they are (a title change keeps the metadata, a
    finish keeps the system prompts, a failed message keeps its parts) sends them back as the
    JSON they were, though the engine's driver decoded them when they were read."""
    async with ChatMemory(engine) as memory:
        chat = memory.scoped(Principal("a"))
        conv = await chat.start_conversation(metadata={"topic": "owls"})
        run = await chat.start_history(conv.id, model="m", system_prompts=["be brief"], metadata={"n": 1})
        call = ToolCallPart(id="c1", name="lookup", arguments={"q": "owls"})
        (pending,) = await chat.append_messages(run.id, [NewMessage("assistant", [call], status="pending")])
        await chat.update_conversation(conv.id, title="Owls")
        await chat.update_history(run.id, model="m2")
        failed = await chat.fail_message(pending.id, error="boom")
        finished = await chat.finish_history(run.id, usage={"tokens": 3})
        assert failed.parts == [call] and finished.system_prompts == ["be brief"]
        found = await chat.get_conversation(conv.id, messages=True)
        assert (found.title, found.metadata) == ("Owls", {"topic": "owls"})
        (history,) = found.histories
        assert (history.model, history.status, history.system_prompts) == (
            "m2",
            "completed",
            ["be brief"],
        )
        assert history.metadata == {"n": 1} and history.usage == {"tokens": 3}
        assert history.messages is not None and history.messages[0].parts == [call]
        assert history.messages[0].status == "error"


async def test_history_starts_and_changes_refused_through_a_callers_engine(engine: AsyncEngine) -> None:
    """Through a caller's engine, a history's start into a conversation that is deleted or
    another's, and a change to a history that is another's or finished, fail with the error
    they name on a store opened from the URL and write nothing (on SQLite the insert or update
    that checks changes no row); an admin's finish of another user's run answers what is stored."""
    async with ChatMemory(engine) as memory:
        alice = memory.scoped(Principal("alice", tenant="t"))
        bob = memory.scoped(Principal("bob", tenant="t"))
        conv = await alice.start_conversation()
        gone = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        done = await alice.start_history(conv.id, model="m")
        await alice.finish_history(done.id)
        await alice.delete_conversation(gone.id)

        async def written() -> tuple[int, ...]:
            async with engine.connect() as conn:
                counts = [select(func.count()).select_from(t) for t in (histories, messages, changes)]
                return tuple([(await conn.execute(count)).scalar_one() for count in counts])

        before = await written()
        with pytest.raises(ConversationNotFound):
            await alice.start_history(gone.id, model="m")
        with pytest.raises(ConversationNotFound):
            await bob.start_run(conv.id, model="m", messages=[NewMessage("user", "x")])
        with pytest.raises(HistoryNotFound):
            await bob.update_history(run.id, model="n")
        with pytest.raises(HistoryNotFound):
            await bob.finish_run(run.id, messages=[NewMessage("user", "x")])
        with pytest.raises(ConflictError, match=f"history {done.id} is already completed"):
            await alice.finish_history(done.id)
        assert await written() == before
        admin = memory.scoped(Principal("boss", tenant="t", admin=True))
        finished = await admin.finish_run(run.id, messages=[NewMessage("user", "x")], usage={"n": 1.5})
        stored = await alice.get_history(run.id, messages=False)
        assert stored.model_dump(exclude={"messages"}) == finished.history.model_dump()
        assert (stored.status, stored.usage) == ("completed", {"n": 1.5})


async def test_unreachable_database_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StorageError):
        await ChatMemory.open(f"sqlite:///{tmp_path}/dir.db")
    with pytest.raises(StorageError):
        await ChatMemory.open("postgresql://nobody@127.0.0.1:1/none")


@pytest.mark.parametrize("under", ["afile", "afile/sub"])
async def test_a_sqlite_file_whose_directory_cannot_be_made_is_a_storage_error(
    tmp_path: Path, under: str
) -> None:
    """Its directory's place is taken by a file: a typed error naming the directory, not the
    ``OSError`` that making it raised."""
    (tmp_path / "afile").write_text("not a directory")
    url = f"sqlite:///{tmp_path}/{under}/db.sqlite"
    with pytest.raises(StorageError, match="cannot make the SQLite file's directory"):
        await ChatMemory.open(url)
    with pytest.raises(StorageError, match="cannot make the SQLite file's directory"):
        create_engine(url)


def _with_query(url: str, **parameters: str) -> str:
    return make_url(url).update_query_dict(parameters).render_as_string(hide_password=False)


async def test_connection_parameters_in_a_postgresql_url_hold_for_the_stores_own_calls(
    postgres_url: str,
) -> None:
    """A URL's connection parameters reach every connection the store opens, not only its
    engine's: asyncpg's ``command_timeout`` ends a write waiting on a lock held elsewhere long
    before the store's own 30-second lock timeout would."""
    url = _with_query(await create_database(postgres_url), command_timeout="1")
    async with ChatMemory.open(url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        async with locked_elsewhere(url, conv.id):
            started = time.monotonic()
            with pytest.raises(StorageError, match="TimeoutError"):
                await asyncio.wait_for(alice.append_messages(run.id, [NewMessage("user", "hi")]), 20)
            assert time.monotonic() - started < 10
        stored = await alice.append_messages(run.id, [NewMessage("user", "again")])
        assert [m.seq for m in stored] == [1]


async def _sessions(url: str) -> list[tuple[str, str]]:
    """Each other session's ``application_name`` and last query on the database at ``url``."""
    connection = await _connect(url)
    try:
        rows = await connection.fetch(
            "SELECT application_name, query FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            make_url(url).database,
        )
        return [(row["application_name"], row["query"]) for row in rows]
    finally:
        await connection.close()


async def test_a_postgresql_url_with_libpq_parameters_opens_and_every_connection_uses_them(
    postgres_url: str,
) -> None:
    """``sslmode``, ``connect_timeout`` and ``application_name``, as hosted services write
    their URLs, are taken as asyncpg's ``ssl``, ``timeout`` and server setting, by the engine
    and by the store's own connections (its pool's and the one listening for changes); a
    parameter asyncpg does not take, or a value it cannot use, is refused at open."""
    database = await create_database(postgres_url)
    url = _with_query(database, sslmode="disable", connect_timeout="5", application_name="notes-app")
    async with ChatMemory.open(url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        await alice.start_history(conv.id, model="m")
        watching = asyncio.ensure_future(anext(aiter(alice.watch(conv.id))))
        for _ in range(500):
            sessions = await _sessions(url)
            if any(query.startswith("LISTEN") for _, query in sessions):
                break
            await asyncio.sleep(0.02)
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        assert any(query.startswith("LISTEN") for _, query in sessions)
        assert len(sessions) >= 2 and {name for name, _ in sessions} == {"notes-app"}
    for parameters, refused in [
        ({"sslmode": "mandatory"}, "sslmode"),
        ({"connect_timeout": "soon"}, "connect_timeout"),
        ({"keepalives_idle": "30"}, "keepalives_idle"),
        ({"sslmode": "require", "ssl": "disable"}, "sslmode"),
        ({"channel_binding": "require"}, "channel_binding"),
        ({"server_settings": "x"}, "server_settings"),
    ]:
        with pytest.raises(InvalidInputError, match=refused) as caught:
            await ChatMemory.open(_with_query(database, **parameters))
        assert caught.value.field == "url"
    # Neon's connection strings ask for channel binding where the server offers it.
    async with ChatMemory.open(_with_query(database, sslmode="disable", channel_binding="prefer")) as memory:
        await memory.scoped(Principal("alice")).start_conversation()
    # As SQLAlchemy has it, ``connect_args`` wins over the URL.
    named = _with_query(database, application_name="from-url")
    async with ChatMemory.open(
        named, connect_args={"server_settings": {"application_name": "given"}}
    ) as memory:
        await memory.scoped(Principal("alice")).start_conversation()
        assert {name for name, _ in await _sessions(named)} == {"given"}


async def test_await_open_and_close(tmp_path: Path) -> None:
    memory = await ChatMemory.open(f"sqlite:///{tmp_path}/c.db")
    conv = await memory.scoped(Principal("a")).start_conversation()
    await memory.close()
    with pytest.raises(StorageError, match="closed"):
        await memory.scoped(Principal("a")).get_conversation(conv.id)
    reopened = await ChatMemory.open(f"sqlite:///{tmp_path}/c.db")
    assert (await reopened.scoped(Principal("a")).get_conversation(conv.id)).id == conv.id
    await reopened.close()


async def test_a_callers_engine_used_before_the_store_has_its_settings_on_every_connection(
    tmp_path: Path,
) -> None:
    """``ChatMemory(engine)`` puts chatmemory's SQLite settings on the engine's connections, on
    one its pool already holds too (the application used its engine first), which every call
    then runs on: not SQLite's defaults (no foreign keys, aiosqlite's 5 s busy timeout instead
    of 30 s, the driver's implicit transactions)."""
    url = f"sqlite:///{tmp_path}/t.db"
    async with ChatMemory.open(url):
        pass  # migrated
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    async with engine.connect() as conn:  # the application's own work: the pool keeps the connection
        await conn.execute(text("SELECT 1"))
    memory = ChatMemory(engine)
    try:
        await memory.scoped(Principal("alice")).start_conversation()
        async with engine.connect() as conn:
            pragmas = {name: (await conn.execute(text(f"PRAGMA {name}"))).scalar_one() for name in _SETTINGS}
        assert pragmas == {"foreign_keys": 1, "busy_timeout": 30000}
    finally:
        await memory.close()
        await engine.dispose()


_SETTINGS = ("foreign_keys", "busy_timeout")


def test_concurrent_calls_on_a_callers_in_memory_engine_from_one_event_loop_then_another() -> None:
    """The same in-memory engine and store, calls gathered on one event loop, then on another
    (each test of a suite its own loop): neither fails."""
    engine = create_async_engine("sqlite+aiosqlite://")
    memory = ChatMemory(engine)
    alice = memory.scoped(Principal("alice"))

    async def gathered() -> None:
        await asyncio.gather(*(alice.start_conversation() for _ in range(5)))

    asyncio.run(memory.migrate())
    asyncio.run(gathered())
    asyncio.run(gathered())
    assert len(asyncio.run(alice.list_conversations(limit=50)).items) == 10
    asyncio.run(memory.close())
    asyncio.run(engine.dispose())


async def test_concurrent_calls_on_a_callers_in_memory_engine_each_run_whole() -> None:
    """A caller's in-memory SQLite engine (``sqlite+aiosqlite://``) hands every checkout the one
    connection its pool holds (SQLAlchemy's StaticPool). Calls made at once (``asyncio.gather``)
    each run whole on it, one after another: none starts its transaction inside another's, rolls
    another's back or commits it, so none fails, and none reports a failure it partly wrote."""
    engine = create_async_engine("sqlite+aiosqlite://")
    memory = ChatMemory(engine)
    try:
        await memory.migrate()
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation()
        run = await alice.start_history(conv.id, model="m")
        await asyncio.gather(
            *(
                alice.append_messages(run.id, [NewMessage("user", f"q{i}"), NewMessage("assistant", f"a{i}")])
                for i in range(5)
            ),
            *(alice.search_messages("q0") for _ in range(3)),
            alice.import_conversation(await alice.export_conversation(conv.id), new_ids=True),
        )
        transcript = await alice.transcript(conv.id)
        assert [m.seq for m in transcript] == list(range(1, 11))
        summary = next(c for c in (await alice.list_conversations()).items if c.id == conv.id)
        assert summary.message_count == 10
    finally:
        await memory.close()
        await engine.dispose()
