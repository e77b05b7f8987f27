"""``python -m benchmarks --quick`` runs end to end and reports every workload (no timing thresholds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ["W1", "W1.p50", "W1.p99", "W2", "W3.last", "W3.all", "W4", "W5", "W5.anomalies", "W5.torn"]
W6 = [f"W6.{q}.{n}" for n in (10, 100) for q in ("p50", "p99")]
# W6 rows that must give figures: each adapter in its documented wiring, and each framework's own stores.
W6_MEASURED = {
    "openai-agents ChatMemorySession, session.run",
    "openai-agents ChatMemorySession, Runner.run(session=)",
    "pydantic-ai ChatMemoryCapability",
    "pydantic-ai message_history in a JSON file",
    "langchain create_agent + ChatMemoryMiddleware",
    "langchain create_agent + InMemoryChatMessageHistory",
    "langchain RunnableWithMessageHistory + ChatMemoryHistory",
    "langchain RunnableWithMessageHistory + InMemoryChatMessageHistory",
    "openai-agents SQLAlchemySession",
    "google-adk Runner + ChatMemorySessionService",
    "google-adk Runner + InMemorySessionService",
    "google-adk Runner + DatabaseSessionService",
    "llama-index FunctionAgent, ChatMemoryBuffer + ChatMemoryChatStore",
    "llama-index FunctionAgent, ChatMemoryBuffer + SimpleChatStore",
    "llama-index FunctionAgent, Memory + ChatMemoryDBChatStore",
    "llama-index FunctionAgent, Memory + SQLAlchemyChatStore",
}
W6_BACKEND = {"sqlite": {"openai-agents SQLiteSession"}, "postgres": set()}
# Stores from the bench group (langchain-community, langchain-postgres): measured, or not installed.
W6_BENCH = {
    "sqlite": {"SQLChatMessageHistory"},
    "postgres": {"SQLChatMessageHistory", "PostgresChatMessageHistory"},
}


def _run(tmp_path: Path, backend: str, env: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    out = tmp_path / f"{backend}.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--backend", backend, "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def _check(markdown: str, rows: list[dict[str, Any]], backend: str, raw: str) -> None:
    assert {tuple(sorted(row)) for row in rows} == {("backend", "system", "unit", "value", "workload")}
    assert f"### {backend}" in markdown
    assert "| chatmemory |" in markdown
    assert "(raw " in markdown  # a raw limit appears in the comparison table
    ours = {r["workload"]: r for r in rows if r["system"] == "chatmemory" and r["backend"] == backend}
    for workload in WORKLOADS:
        assert isinstance(ours[workload]["value"], int | float), ours.get(workload)
    assert ours["W5.anomalies"]["value"] == 0
    assert ours["W5.torn"]["value"] == 0
    systems = {r["system"] for r in rows}
    assert raw in systems
    assert "openai-agents SQLAlchemySession" in systems  # a peer: measured, or reported as not installed
    _check_w6(markdown, rows, backend)


def _check_w6(markdown: str, rows: list[dict[str, Any]], backend: str) -> None:
    assert "W6: one agent turn" in markdown
    w6 = {(r["system"], r["workload"]): r for r in rows if r["workload"].startswith("W6.")}
    for system in W6_MEASURED | W6_BACKEND[backend]:
        for workload in W6:
            assert isinstance(w6[system, workload]["value"], int | float), w6.get((system, workload))
        assert f"| {system.split(' ', 1)[1]} |" in markdown
    for store in W6_BENCH[backend]:
        for wiring in ("create_agent", "RunnableWithMessageHistory"):
            row = w6[f"langchain {wiring} + {store}", "W6.p50.10"]
            assert row["value"] is not None or row["unit"].startswith("not installed ("), row


def test_quick_run_on_sqlite(tmp_path: Path) -> None:
    markdown, rows = _run(tmp_path, "sqlite", {})
    _check(markdown, rows, "sqlite", "raw sqlite3+to_thread")
    assert "W1 turns/s" in markdown


def test_quick_run_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    markdown, rows = _run(tmp_path, "postgres", {"CHATMEMORY_BENCH_POSTGRES_URL": postgres_url})
    _check(markdown, rows, "postgres", "raw asyncpg")
