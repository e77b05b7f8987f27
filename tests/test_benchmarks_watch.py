"""``python -m benchmarks.watch`` runs end to end at tiny sizes and reports every figure (no thresholds)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = [
    "writer in the same process",
    "writer in another process",
    "no change log (baseline)",
    "change log, no watcher",
    "change log, 1 watcher",
    "change log, 10 watchers",
]


def test_the_watch_benchmark_reports_latency_and_writer_cost() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.watch", "--backend", "sqlite", "--events", "5", "--turns", "5",
         "--repeat", "1"],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ROWS:
        figures = re.search(rf"^\| {re.escape(row)} \| ([\d.]+) \| ([\d.]+) \|", done.stdout, re.MULTILINE)
        assert figures is not None, (row, done.stdout)
        assert float(figures[1]) > 0
