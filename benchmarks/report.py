"""Collected figures, the markdown tables and the JSON rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

CHATMEMORY = "chatmemory"


class Metric(NamedTuple):
    """One measured figure and how to read it."""

    key: str
    label: str
    higher_is_better: bool | None  # None: a check, not a speed


METRICS = [
    Metric("W1", "W1 turns/s", True),
    Metric("W1.p50", "W1 p50 ms", False),
    Metric("W1.p99", "W1 p99 ms", False),
    Metric("W2", "W2 msgs/s", True),
    Metric("W3.last", "W3 newest page p50 ms", False),
    Metric("W3.all", "W3 all p50 ms", False),
    Metric("W4", "W4 list p50 ms", False),
    Metric("W5", "W5 turns/s", True),
    Metric("W5.anomalies", "W5 lost/dup/reordered", None),
    Metric("W5.torn", "W5 split turns", None),
    Metric("W7.bulk", "W7 first search after bulk ms", False),
    Metric("W7", "W7 search after append p50 ms", False),
    Metric("W7.broad", "W7 search of every bulk message p50 ms", False),
]
SCALE_METRICS = [m for m in METRICS if m.key in {"W3.last", "W3.all", "W4"}]


@dataclass
class Recorder:
    """Figures and notes (n/a, failures, not installed) for one backend at a time."""

    backend: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    families: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)

    def add(self, system: str, workload: str, value: float, unit: str) -> None:
        """Record one figure."""
        self.rows.append(
            {"backend": self.backend, "workload": workload, "system": system, "value": value, "unit": unit}
        )

    def note(self, system: str, workload: str, text: str) -> None:
        """Record why a figure is missing (``value`` is null, ``unit`` says why)."""
        self.rows.append(
            {"backend": self.backend, "workload": workload, "system": system, "value": None, "unit": text}
        )

    def na(self, system: str, workload: str) -> None:
        """The system has no API for this workload."""
        self.note(system, workload, "n/a")

    def value(self, backend: str, system: str, workload: str) -> float | None:
        """A recorded figure, or None."""
        for row in self.rows:
            if (row["backend"], row["system"], row["workload"]) == (backend, system, workload):
                return row["value"] if isinstance(row["value"], int | float) else None
        return None

    def cell(self, backend: str, system: str, workload: str) -> str:
        """A figure or its note, formatted for a table."""
        for row in self.rows:
            if (row["backend"], row["system"], row["workload"]) == (backend, system, workload):
                return _fmt(row["value"]) if row["value"] is not None else str(row["unit"])
        return ""

    def systems(self, backend: str) -> list[str]:
        """Systems with any row on ``backend``, in the order they ran."""
        return list(dict.fromkeys(r["system"] for r in self.rows if r["backend"] == backend))

    def backends(self) -> list[str]:
        """Backends with any row."""
        return list(dict.fromkeys(r["backend"] for r in self.rows))

    def write_json(self, path: Path) -> None:
        """The rows as a JSON array."""
        path.write_text(json.dumps(self.rows, indent=1) + "\n")


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def speed_ratio(metric: Metric, ours: float, theirs: float) -> float:
    """How many times as fast chatmemory is (above 1.0 = faster)."""
    return ours / theirs if metric.higher_is_better else theirs / ours


def _fastest(rec: Recorder, backend: str, family: str, metric: Metric) -> tuple[str, float] | None:
    figures = [
        (system, value)
        for system in rec.systems(backend)
        if rec.families.get(system) == family
        and (value := rec.value(backend, system, metric.key)) is not None
    ]
    if not figures:
        return None
    pick = max if metric.higher_is_better else min
    return pick(figures, key=lambda sv: sv[1])


def _table(header: list[str], lines: Iterable[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


def markdown(rec: Recorder, extra: Callable[[Recorder, str], list[str]] | None = None) -> str:
    """Per backend: every system's medians, then chatmemory against the fastest peer and raw limit,
    then what ``extra`` gives for the backend (W6's tables)."""
    out: list[str] = []
    for backend in rec.backends():
        systems = [s for s in rec.systems(backend) if not _only_w6(rec, backend, s)]
        out += [f"### {backend}", "", rec.settings.get(backend, ""), ""]
        keys = [m for m in METRICS if any(rec.cell(backend, s, m.key) for s in systems)]
        if not keys:  # W6 alone
            out += [*(extra(rec, backend) if extra else []), ""]
            continue
        out += _table(
            ["system", *(m.label for m in keys)],
            ([s, *(rec.cell(backend, s, m.key) for m in keys)] for s in systems),
        )
        out += [
            "",
            "chatmemory against the fastest of each family"
            " (x = chatmemory's speed / theirs; 1.00 or more means as fast or faster):",
            "",
        ]
        lines = []
        for metric in keys:
            ours = rec.value(backend, CHATMEMORY, metric.key)
            if metric.higher_is_better is None or ours is None:
                continue
            line = [metric.label, _fmt(ours)]
            for family in ("peer", "raw"):
                best = _fastest(rec, backend, family, metric)
                line += (
                    [f"{_fmt(best[1])} ({best[0]})", f"{speed_ratio(metric, ours, best[1]):.2f}x"]
                    if best
                    else ["n/a", ""]
                )
            lines.append(line)
        out += _table(["measure", "chatmemory", "fastest peer", "x peer", "fastest raw", "x raw"], lines)
        out += ["", *scale_table(rec, backend), ""]
        out += [*(extra(rec, backend) if extra else []), ""]
    return "\n".join(out)


def _only_w6(rec: Recorder, backend: str, system: str) -> bool:
    return all(
        r["workload"].startswith("W6") for r in rec.rows if (r["backend"], r["system"]) == (backend, system)
    )


def scale_table(rec: Recorder, backend: str) -> list[str]:
    """Scale runs: each measure at each stored size, and the change from the smallest to the largest."""
    labels = list(
        dict.fromkeys(
            r["workload"].split("@")[1] for r in rec.rows if r["backend"] == backend and "@" in r["workload"]
        )
    )
    if not labels:
        return []
    lines = []
    for system in rec.systems(backend):
        for metric in SCALE_METRICS:
            values = [rec.value(backend, system, f"{metric.key}@{label}") for label in labels]
            if all(v is None for v in values):
                continue
            first, last = values[0], values[-1]
            change = f"{(last / first - 1) * 100:+.0f}%" if first and last else ""
            lines.append([system, metric.label, *(_fmt(v) if v is not None else "" for v in values), change])
    header = ["system", "measure", *(f"{label} stored" for label in labels), f"{labels[0]}→{labels[-1]}"]
    return [
        "Scale (the same fixed conversation and user, more stored messages around them):",
        "",
        *_table(header, lines),
    ]
