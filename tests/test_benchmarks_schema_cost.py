"""``python -m benchmarks.schema_cost``: each variant is the schema it is named for, and the run
reports a figure for every one (no thresholds)."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from benchmarks import schema_cost
from benchmarks._targets import SQLITE_PEER_PRAGMAS


def _schema(path: Path) -> tuple[set[str], str]:
    with closing(sqlite3.connect(path)) as connection:
        names = connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        indexes = {name for (name,) in names}
        (table,) = connection.execute(
            "SELECT sql FROM sqlite_master WHERE name IN ('chat_messages', 'agent_messages')"
        ).fetchone()
    return indexes, table


def test_each_variant_is_the_schema_it_names(tmp_path: Path) -> None:
    variants = schema_cost._variants(tmp_path)
    schemas = {name: _schema(path) for name, (path, _, _) in variants.items()}
    as_is, table = schemas["chatmemory's schema"]
    assert "role = 'system' OR role = 'user'" in table and " IN (" not in table
    assert {"ix_chat_messages_chat_history_id_created_at", "ix_chat_messages_chat_history_id_seq"} <= as_is
    indexes, listed = schemas["with IN-list checks (before 0009)"]
    assert indexes == as_is and "role IN ('system', 'user', 'assistant', 'tool')" in listed
    for name, dropped in (
        ("without the (history, created_at) index", "ix_chat_messages_chat_history_id_created_at"),
        ("without the (history, seq) index", "ix_chat_messages_chat_history_id_seq"),
    ):
        assert schemas[name] == (as_is - {dropped}, table)
    assert schemas["without foreign-key enforcement"] == (as_is, table)
    assert [foreign_keys for _, foreign_keys, _ in variants.values()] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]
    assert "message_data TEXT NOT NULL" in schemas["SQLiteSession's tables (openai-agents)"][1]


def test_the_run_reports_every_variant(capsys: pytest.CaptureFixture[str]) -> None:
    schema_cost.main(["--batch", "5", "--batches", "3", "--rounds", "1"])
    out = capsys.readouterr().out
    for name in (
        "chatmemory's schema",
        "with IN-list checks (before 0009)",
        "without the (history, created_at) index",
        "without the (history, seq) index",
        "without foreign-key enforcement",
        "SQLiteSession's tables (openai-agents)",
    ):
        figures = re.search(rf"^\| {re.escape(name)} \| ([\d.]+) \| ([\d.]+)x \|", out, re.MULTILINE)
        assert figures is not None, (name, out)
        assert float(figures[1]) > 0


def test_the_peer_is_connected_as_the_suite_connects_it(tmp_path: Path) -> None:
    """``SQLiteSession``'s tables are written with the pragmas the suite runs ``SQLiteSession`` with:
    the SDK never turns foreign-key enforcement on, so its batch checks no parent row."""
    path, foreign_keys, _ = schema_cost._variants(tmp_path)["SQLiteSession's tables (openai-agents)"]
    with closing(schema_cost._connect(path, foreign_keys)) as connection:
        settings = {
            pragma.split(" = ")[0]: connection.execute(f"PRAGMA {pragma.split(' = ')[0]}").fetchone()[0]
            for pragma in (*SQLITE_PEER_PRAGMAS, "foreign_keys = OFF")
        }
    assert settings == {"busy_timeout": 30000, "journal_mode": "wal", "synchronous": 1, "foreign_keys": 0}


def test_every_variant_runs_in_every_place_once_settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Round ``n`` starts at the ``n``-th variant, so over as many rounds as variants each runs
    first once (the place that waits least for the disk), and each starts once what the ones
    before it wrote is on disk."""
    order: list[str] = []
    copy = schema_cost.shutil.copyfile

    def copied(source: Path, target: Path) -> object:
        if target.name.startswith("round"):
            order.append(f"copy {Path(source).name}")
        return copy(source, target)

    monkeypatch.setattr(schema_cost.shutil, "copyfile", copied)
    monkeypatch.setattr(schema_cost, "_settle", lambda: order.append("sync"))
    schema_cost.main(["--batch", "2", "--batches", "1", "--rounds", "6"])
    runs = [entry for entry in order if entry != "sync"]
    assert order == [step for run in runs for step in (run, "sync")]
    rounds = [runs[i : i + 6] for i in range(0, 36, 6)]
    assert len(runs) == 36 and all(len(set(r)) == 6 for r in rounds)
    assert [r[0] for r in rounds] == [rounds[0][i] for i in range(6)]
