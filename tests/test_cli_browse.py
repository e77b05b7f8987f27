"""The browsing and data commands, each run as ``python -m chatmemory`` in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from chatmemory import ChatMemory, NewMessage, Principal, ToolCallPart, ToolResultPart

ROOT = Path(__file__).parent.parent


def _run(
    *args: str, env: dict[str, str] | None = None, stdin: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m chatmemory ARGS``, its standard input read from ``stdin`` (else empty)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("CHATMEMORY_PRINCIPAL", "CHATMEMORY_URL")}
    with open(stdin or os.devnull, "rb") as feed:
        return subprocess.run(
            [sys.executable, "-m", "chatmemory", *args],
            stdin=feed,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            cwd=ROOT,
            env={**environment, **(env or {})},
            timeout=120,
            check=False,
        )


async def _seed(url: str) -> tuple[str, str]:
    async with ChatMemory.open(url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation("Trip to Rome")
        run = await alice.start_history(conv.id, model="gpt-4.1", system_prompts=["Be brief."])
        await alice.append_messages(
            run.id,
            [
                NewMessage("user", "Find a hotel in Rome"),
                NewMessage("assistant", [ToolCallPart(id="c1", name="lookup", arguments={"q": "hotel"})]),
                NewMessage("tool", [ToolResultPart(call_id="c1", content="Hotel Roma")]),
                NewMessage("assistant", "Hotel Roma it is.", model="gpt-4.1-mini"),
            ],
        )
        await alice.finish_history(run.id)
        gone = await alice.start_conversation("Old chat")
        await alice.delete_conversation(gone.id)
        return str(conv.id), str(run.id)


def test_ls_show_and_search(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    cid, hid = asyncio.run(_seed(url))
    who = ["--url", url, "--as", "alice"]

    listed = _run("ls", *who)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.split("\t")[:3] == [cid, "Trip to Rome", "4"]
    assert _run("ls", "--url", url, env={"CHATMEMORY_PRINCIPAL": "bob"}).stdout == ""
    nobody = _run("ls", "--url", url)
    assert nobody.returncode == 2
    assert nobody.stderr == (
        "chatmemory: invalid principal: none given: pass --as NAME or set $CHATMEMORY_PRINCIPAL\n"
    )
    # The shared options go before the command too; given both places, the command's own win.
    assert _run(*who, "ls").stdout == listed.stdout
    assert _run("--as", "bob", "--url", url, "ls", "--as", "alice").stdout == listed.stdout
    assert _run("--as", "alice", "--url", url, "ls", "--as", "bob").stdout == ""

    shown = _run("show", cid, *who)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"== history {hid} · model gpt-4.1 · completed" in out
    assert "system prompt: Be brief." in out
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.search(rf"^\[1\] {stamp} user: Find a hotel in Rome$", out, re.MULTILINE)
    assert re.search(rf"^\[4\] {stamp} assistant \(gpt-4.1-mini\): Hotel Roma it is.$", out, re.MULTILINE)
    assert '-> lookup({"q": "hotel"}) [c1]' in out
    assert "\x1b[" not in out  # plain when piped
    hidden = _run("show", cid, "--url", url, "--as", "bob")
    assert hidden.returncode == 2
    assert f"conversation {cid} not found" in hidden.stderr

    found = _run("search", "hotel rome", *who)
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines() == [
        found.stdout.splitlines()[0],
        "    Find a «hotel» in «Rome»",
    ]
    assert found.stdout.startswith(f"Trip to Rome {cid} [1] user ")
    assert _run("search", "'; DROP TABLE chat_messages; --", *who).returncode == 0
    assert _run("search", "hotel", "--url", url, "--as", "bob").stdout == ""


def test_export_import_round_trip_with_bad_lines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    cid, _ = asyncio.run(_seed(url))
    dump = tmp_path / "dump.jsonl"
    exported = _run("export", "--all", "-o", str(dump), "--url", url, "--as", "alice")
    assert exported.returncode == 0, exported.stderr
    assert "exported 1 conversation" in exported.stderr
    (doc,) = [json.loads(line) for line in dump.read_text(encoding="utf-8").splitlines()]
    assert doc["conversation"]["id"] == cid
    assert _run("export", "--url", url, "--as", "alice").returncode == 2

    broken = dict(doc, histories=[{**doc["histories"][0], "status": "sideways"}])
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "{not json\n" + json.dumps(broken) + "\n\n" + dump.read_text(encoding="utf-8"), encoding="utf-8"
    )
    other = f"sqlite:///{tmp_path / 'other.db'}"
    imported = _run("import", str(mixed), "--url", other, "--as", "bob")
    assert imported.returncode == 1
    assert "line 1: not JSON" in imported.stderr
    assert "line 2: invalid document.histories.0.status" in imported.stderr
    assert "imported 1 conversation (4 messages); 2 failed" in imported.stderr

    listed = _run("ls", "--url", other, "--as", "bob").stdout.splitlines()
    assert [row.split("\t")[0] for row in listed] == [cid]
    again = _run("export", cid, "--url", other, "--as", "bob")
    assert json.loads(again.stdout)["histories"] == doc["histories"]

    copied = _run("import", str(dump), "--new-ids", "--url", other, "--as", "bob")
    assert copied.returncode == 0, copied.stderr
    assert len(_run("ls", "--url", other, "--as", "bob").stdout.splitlines()) == 2
    missing = _run("import", str(tmp_path / "nope.jsonl"), "--url", other, "--as", "bob")
    assert missing.returncode == 2


def test_import_into_the_database_it_came_from_names_the_flag_that_copies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    asyncio.run(_seed(url))
    backup = tmp_path / "backup.jsonl"
    assert _run("export", "--all", "-o", str(backup), "--url", url, "--as", "alice").returncode == 0

    again = _run("import", str(backup), "--url", url, "--as", "alice")
    assert again.returncode == 1
    assert "is already stored; import with --new-ids to make a copy" in again.stderr
    assert "new_ids=True" not in again.stderr
    assert "imported 0 conversations (0 messages); 1 failed" in again.stderr

    copied = _run("import", str(backup), "--new-ids", "--url", url, "--as", "alice")
    assert copied.returncode == 0, copied.stderr
    assert len(_run("ls", "--url", url, "--as", "alice").stdout.splitlines()) == 2


def test_purge_needs_admin_and_reports_counts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    asyncio.run(_seed(url))
    refused = _run("purge", "--deleted-before", "2999-01-01", "--url", url, "--as", "alice")
    assert refused.returncode == 2
    assert "admin" in refused.stderr
    assert (
        _run("purge", "--deleted-before", "yesterday", "--url", url, "--as", "root", "--admin").returncode
        == 2
    )
    early = _run("purge", "--deleted-before", "2000-01-01", "--url", url, "--as", "root", "--admin")
    assert early.stdout.startswith("purged 0 conversations, 0 histories and 0 messages")
    purged = _run(
        "purge", "--deleted-before", "2999-01-01T00:00:00+02:00", "--url", url, "--as", "root", "--admin"
    )
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("purged 1 conversation, 0 histories and 0 messages")
    assert _run("ls", "--url", url, "--as", "alice").stdout.count("\n") == 1


def test_principal_is_required(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    result = _run("ls", "--url", url)
    assert result.returncode == 2
    assert "--as" in result.stderr


def test_import_reports_bytes_that_are_not_utf8_by_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    cid, _ = asyncio.run(_seed(url))
    exported = _run("export", cid, "--url", url, "--as", "alice")
    assert exported.returncode == 0, exported.stderr
    good = exported.stdout.encode("utf-8")
    latin1 = exported.stdout.replace("Trip to Rome", "Trip to R\udce9me").encode("utf-8", "surrogateescape")
    dump = tmp_path / "mixed.jsonl"
    dump.write_bytes(b"\xff\xfe not text\n" + latin1 + good)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    for source, stdin in [(str(dump), None), ("-", dump)]:
        result = _run("import", source, "--new-ids", "--url", other, "--as", "bob", stdin=stdin)
        errors = result.stderr
        assert result.returncode == 1, errors
        assert "line 1: not JSON" in errors
        assert "line 2: invalid title: must be valid unicode" in errors
        assert "imported 1 conversation (4 messages); 2 failed" in errors
    titles = _run("ls", "--url", other, "--as", "bob").stdout
    assert titles.count("Trip to Rome") == 2


async def _seed_large(url: str) -> str:
    async with ChatMemory.open(url) as memory:
        alice = memory.scoped(Principal("alice"))
        conv = await alice.start_conversation("Long")
        run = await alice.start_history(conv.id, model="m")
        await alice.append_messages(run.id, [NewMessage("user", f"{i} " + "x" * 99_000) for i in range(30)])
        return str(conv.id)


def test_output_read_only_in_part_ends_quietly(tmp_path: Path) -> None:
    """A reader that stops early (``| head``) ends the command without a traceback."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    cid = asyncio.run(_seed_large(url))
    with subprocess.Popen(
        [sys.executable, "-m", "chatmemory", "show", cid, "--url", url, "--as", "alice"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        # Three megabytes, a message at a time, cannot fit in the pipe: the command is still writing.
        assert process.stdout.read(100).startswith(b"Long ")
        process.stdout.close()
        errors = process.stderr.read().decode("utf-8", "replace")
        assert process.wait(timeout=120) == 141, errors
    assert "Traceback" not in errors
    assert "Exception ignored" not in errors


def test_ls_refuses_a_limit_below_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    asyncio.run(_seed(url))
    for limit in ["0", "-3"]:
        result = _run("ls", "--limit", limit, "--url", url, "--as", "alice")
        assert (result.returncode, result.stdout) == (2, "")
        assert "invalid --limit: must be a positive integer" in result.stderr
    assert _run("ls", "--limit", "1", "--url", url, "--as", "alice").stdout.count("\n") == 1


def test_an_export_that_fails_leaves_the_output_file_as_it_was(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    cid, _ = asyncio.run(_seed(url))
    out = tmp_path / "out"
    out.mkdir()
    dump = out / "dump.jsonl"
    dump.write_text("earlier export\n", encoding="utf-8")
    missing = "01a22ec0-0e3e-7fb4-94fe-5e033d7fe305"
    for args in [[cid, missing], ["not-an-id"], [cid, "--as", ""]]:
        failed = _run("export", "-o", str(dump), "--url", url, "--as", "alice", *args)
        assert failed.returncode == 2, failed.stderr
        assert dump.read_text(encoding="utf-8") == "earlier export\n"
        assert [p.name for p in out.iterdir()] == ["dump.jsonl"]
    done = _run("export", cid, "-o", str(dump), "--url", url, "--as", "alice")
    assert done.returncode == 0, done.stderr
    assert json.loads(dump.read_text(encoding="utf-8"))["conversation"]["id"] == cid
    assert [p.name for p in out.iterdir()] == ["dump.jsonl"]


def _one_conversation(url: str, *, owner: str, title: str, model: str, text: str) -> str:
    """The id of a new conversation of ``owner`` holding one run with one user message."""

    async def seed() -> str:
        async with ChatMemory.open(url) as memory:
            chat = memory.scoped(Principal(owner))
            conv = await chat.start_conversation(title)
            run = await chat.start_history(conv.id, model=model)
            await chat.append_messages(run.id, [NewMessage("user", text)])
            return str(conv.id)

    return asyncio.run(seed())


def test_on_a_terminal_text_that_looks_like_markup_is_printed_as_it_is(tmp_path: Path) -> None:
    """Stored text (an owner id, a title, a model, a message) is never read as rich markup: a
    closing tag that matches nothing failed ``show`` with a traceback, and a style tag vanished."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    cid = _one_conversation(url, owner="[/x]", title="[bold]t[/]", model="[red]m", text="[/] hello")
    terminal = {"FORCE_COLOR": "1", "COLUMNS": "200"}
    for command in (("show", cid), ("ls",), ("search", "hello")):
        done = _run(*command, "--url", url, "--as", "[/x]", env=terminal)
        assert done.returncode == 0, done.stderr
        out = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
        assert "\x1b[" in done.stdout  # rendered for a terminal
        assert "[bold]t[/]" in out
        if command[0] == "show":
            assert "owner [/x] ·" in out
            assert "[red]m" in out
            assert "[/] hello" in out


def test_on_an_80_column_terminal_ls_shows_whole_ids_that_show_takes(tmp_path: Path) -> None:
    """The table clipped ids to fit 80 columns ("01a2352c-f062-7a…"), which ``show`` refuses."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    title = "A long title that takes up the room of the table in a narrow terminal"
    cid = _one_conversation(url, owner="alice", title=title, model="m", text="hello")
    done = _run("ls", "--url", url, "--as", "alice", env={"FORCE_COLOR": "1", "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert "\x1b[" in done.stdout  # rendered for a terminal
    assert cid in re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    assert _run("show", cid, "--url", url, "--as", "alice").returncode == 0


def test_a_title_with_line_breaks_and_tabs_keeps_each_listed_conversation_on_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    cid = _one_conversation(url, owner="alice", title="two\nlines\tand\r\na tab", model="m", text="hello")
    (row,) = _run("ls", "--url", url, "--as", "alice").stdout.splitlines()
    assert row.split("\t")[:3] == [cid, "two lines and a tab", "1"]
    place, snippet = _run("search", "hello", "--url", url, "--as", "alice").stdout.splitlines()
    assert place.startswith(f"two lines and a tab {cid} [1] user ")
    assert snippet == "    «hello»"


def test_import_reads_a_file_that_starts_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Editors on Windows save UTF-8 with a byte order mark: its first line imports like the rest,
    from a file or from standard input."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    cid, _ = asyncio.run(_seed(url))
    exported = _run("export", cid, "--url", url, "--as", "alice")
    assert exported.returncode == 0, exported.stderr
    dump = tmp_path / "bom.jsonl"
    dump.write_bytes(b"\xef\xbb\xbf" + exported.stdout.encode("utf-8"))
    other = f"sqlite:///{tmp_path / 'other.db'}"
    for source, stdin in [(str(dump), None), ("-", dump)]:
        result = _run("import", source, "--new-ids", "--url", other, "--as", "bob", stdin=stdin)
        errors = result.stderr
        assert result.returncode == 0, errors
        assert "imported 1 conversation (4 messages); 0 failed" in errors
