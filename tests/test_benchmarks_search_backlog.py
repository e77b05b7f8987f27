"""``python -m benchmarks.search_backlog`` runs end to end at a tiny size on both backends (on
PostgreSQL also with a statement timeout set) and reports every figure (no thresholds)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.search_backlog", "--rounds", "1", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _rows(stdout: str) -> None:
    for way in ("in parts", "in one transaction"):
        row = re.search(rf"^\| 1 \| {way} \| (\d+) \| ([\d.]+) \| (\d+) \|$", stdout, re.MULTILINE)
        assert row is not None, (way, stdout)
        assert int(row[3]) > 0


def test_the_search_backlog_benchmark_reports_both_ways() -> None:
    _rows(_run("--messages", "12000"))


def test_on_postgresql_with_a_statement_timeout(postgres_url: str) -> None:
    env = {"CHATMEMORY_BENCH_POSTGRES_URL": postgres_url}
    stdout = _run("--backend", "postgres", "--messages", "6000", "--statement-timeout", "60000", env=env)
    _rows(stdout)
