"""W6: one agent turn through each chatmemory framework adapter, beside each framework's own stores."""

from __future__ import annotations

from benchmarks.adapters._report import w6_tables
from benchmarks.adapters._turns import ENTRIES, WORKLOAD, run_w6

__all__ = ["ENTRIES", "WORKLOAD", "run_w6", "w6_tables"]
