"""``python -m benchmarks.search_backlog`` runs end to end at a tiny size and reports every figure
(no thresholds)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_search_backlog_benchmark_reports_both_ways() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.search_backlog", "--messages", "12000", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for way in ("in parts", "in one transaction"):
        row = re.search(rf"^\| 1 \| {way} \| (\d+) \| ([\d.]+) \| (\d+) \|$", done.stdout, re.MULTILINE)
        assert row is not None, (way, done.stdout)
        assert int(row[3]) > 0
