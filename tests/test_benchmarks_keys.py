"""``python -m benchmarks.keys`` runs end to end at tiny sizes on both backends (the suite's own
PostgreSQL server) and reports every figure (no thresholds)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks._targets import POSTGRES_ENV

ROOT = Path(__file__).resolve().parent.parent


def test_the_keys_benchmark_reports_each_call_and_way(postgres_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.keys", "--backend", "both", "--rounds", "3"],
        cwd=ROOT, env={**os.environ, POSTGRES_ENV: postgres_url}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for backend in ("sqlite", "postgres"):
        section = done.stdout.split(f"### {backend}")[1].split("###")[0]
        for call in ("append_messages", "finish_run"):
            row = re.search(rf"^\| {call} \|((?: [\d.]+ \|){{6}})$", section, re.MULTILINE)
            assert row is not None, (backend, call, done.stdout)
            assert all(float(figure) > 0 for figure in row[1].split("|") if figure.strip())
