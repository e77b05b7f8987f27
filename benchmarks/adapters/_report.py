"""The W6 tables: every row at each stored length, then each adapter against its framework's stores."""

from __future__ import annotations

from typing import Any

from benchmarks.adapters._turns import ENTRIES, WORKLOAD, TurnEntry


def _labels(rec: Any, backend: str) -> list[str]:
    prefix = f"{WORKLOAD}.p50."
    return list(
        dict.fromkeys(
            r["workload"].removeprefix(prefix)
            for r in rec.rows
            if r["backend"] == backend and r["workload"].startswith(prefix)
        )
    )


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(line) + " |" for line in lines]


def _fastest(
    rec: Any, backend: str, adapter: TurnEntry, label: str, *, persistent: bool
) -> tuple[TurnEntry, float] | None:
    figures = [
        (entry, value)
        for entry in ENTRIES
        if entry.family != "chatmemory"
        and (entry.framework, entry.wiring) == (adapter.framework, adapter.wiring)
        and (entry.persistent or not persistent)
        and (value := rec.value(backend, entry.row, f"{WORKLOAD}.p50.{label}")) is not None
    ]
    return min(figures, key=lambda ev: ev[1]) if figures else None


def _versus(rec: Any, backend: str, adapter: TurnEntry, label: str) -> str:
    ours = rec.value(backend, adapter.row, f"{WORKLOAD}.p50.{label}")
    if not ours:
        return ""
    found = [
        f"{best[1] / ours:.2f}x ({best[0].store})"
        for persistent in (False, True)
        if (best := _fastest(rec, backend, adapter, label, persistent=persistent)) is not None
    ]
    return "; ".join(dict.fromkeys(found))


def w6_tables(rec: Any, backend: str) -> list[str]:
    """Markdown lines for W6 on ``backend`` (none when W6 did not run there)."""
    labels = _labels(rec, backend)
    if not labels:
        return []
    entries = [e for e in ENTRIES if e.row in rec.systems(backend)]
    lines = []
    for entry in entries:
        cells = []
        for n in labels:
            p50, p99 = (rec.cell(backend, entry.row, f"{WORKLOAD}.{q}.{n}") for q in ("p50", "p99"))
            # A note (failed, not installed) is said once, under p50.
            cells += [p50, p99 if rec.value(backend, entry.row, f"{WORKLOAD}.p99.{n}") is not None else ""]
        first = rec.value(backend, entry.row, f"{WORKLOAD}.p50.{labels[0]}")
        last = rec.value(backend, entry.row, f"{WORKLOAD}.p50.{labels[-1]}")
        change = f"{last / first:.1f}x" if first and last else ""
        lines.append([entry.framework, entry.name, *cells, change])
    header = [
        "framework",
        "wiring + store",
        *(f"{label} {q} ms" for label in labels for q in ("p50", "p99")),
        f"p50 {labels[-1]} / {labels[0]}",
    ]
    out = [
        f"W6: one agent turn (reload + fake model call + persist), ms per turn, at {', '.join(labels)}"
        " stored messages:",
        "",
        *_table(header, lines),
    ]
    compared = []
    for adapter in (e for e in entries if e.family == "chatmemory"):
        cells = [_versus(rec, backend, adapter, label) for label in labels]
        compared.append([f"{adapter.framework} {adapter.name}", *cells])
    if compared:
        out += [
            "",
            "Each adapter against the fastest of its framework's own stores in the same wiring, and"
            " when that one keeps the conversation in memory only, also against the fastest that"
            " persists it (x = their p50 / the adapter's; 1.00 or more means as fast or faster):",
            "",
            *_table(["adapter", *(f"x at {label}" for label in labels)], compared),
        ]
    return out
