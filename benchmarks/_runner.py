"""Runs every system through the workloads on one backend."""

from __future__ import annotations

import re
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import workloads as w
from benchmarks._data import Sizes
from benchmarks._seed import Layout, seed
from benchmarks._system import RECENT, Entry, System
from benchmarks._targets import Target, analyze
from benchmarks.adapters import run_w6
from benchmarks.report import Recorder

ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")
_WRITES = frozenset({"W1", "W2", "W3", "W5", "W7"})


@dataclass(frozen=True)
class Plan:
    """What to run: sizes, workloads, scale totals and which systems (by name substring)."""

    sizes: Sizes
    workloads: tuple[str, ...] = ALL_WORKLOADS
    scale: tuple[int, ...] = ()
    only: tuple[str, ...] = ()

    def picks(self, entry: Entry) -> bool:
        """Whether ``entry`` is selected."""
        return not self.only or any(o.lower() in entry.name.lower() for o in self.only)


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:24]


async def _guarded(
    rec: Recorder, system: str, workloads: list[str], step: Callable[[], Awaitable[Any]]
) -> Any:
    """Run one step; a failure is recorded against its workloads and the run goes on."""
    try:
        return await step()
    except NotImplementedError:
        for workload in workloads:
            rec.na(system, workload)
    except Exception as exc:
        _log(f"{system} {'/'.join(workloads)} failed:\n{traceback.format_exc()}")
        for workload in workloads:
            rec.note(system, workload, f"failed: {type(exc).__name__}")
    return None


async def _writes(system: System, target: Target, plan: Plan, rec: Recorder) -> None:
    sizes, name = plan.sizes, system.name
    store = await target.fresh(_slug(name))
    await system.start(store)
    try:
        await w.warm_up(system, sizes)
        if "W1" in plan.workloads:
            _log(f"{name}: W1")
            await _guarded(
                rec, name, ["W1", "W1.p50", "W1.p99"], lambda: w.w1_append_turns(system, sizes, rec)
            )
        if {"W2", "W3", "W7"} & set(plan.workloads):
            _log(f"{name}: W2")
            conv = await _guarded(rec, name, ["W2"], lambda: w.w2_append_batches(system, sizes, rec))
            if "W3" in plan.workloads and conv is not None:
                _log(f"{name}: W3")
                await analyze(store)
                await _guarded(
                    rec, name, ["W3.last", "W3.all"],
                    lambda: w.w3_read(system, conv, sizes, rec, stored=sizes.w2_messages),
                )  # fmt: skip
            if "W7" in plan.workloads and conv is not None:
                _log(f"{name}: W7")
                await _guarded(
                    rec, name, ["W7.bulk", "W7", "W7.broad"], lambda: w.w7_search(system, conv, sizes, rec)
                )
        if "W5" in plan.workloads:
            _log(f"{name}: W5")
            await _guarded(
                rec, name, ["W5", "W5.anomalies", "W5.torn"], lambda: w.w5_concurrent(system, sizes, rec)
            )
    finally:
        await system.stop()


async def _reads(
    systems: list[System], target: Target, plan: Plan, rec: Recorder, layout: Layout, suffix: str, long: bool
) -> None:
    _log(f"loading {layout.total_messages:,} messages for {'scale ' + suffix if suffix else 'W4'}")
    store = await target.fresh("seeded")
    seeded = await seed(store, layout, plan.sizes.w4_page)
    for system in systems:
        await system.start(store)
        try:
            _log(f"{system.name}: reads {suffix}")
            if long:
                await _guarded(
                    rec, system.name, [f"W3.last{suffix}", f"W3.all{suffix}"],
                    lambda s=system: w.w3_seeded(s, seeded, plan.sizes, rec, suffix=suffix),  # type: ignore[misc]
                )  # fmt: skip
            await _guarded(
                rec, system.name, [f"W4{suffix}"],
                lambda s=system: w.w4_recent(s, seeded, plan.sizes, rec, suffix=suffix),  # type: ignore[misc]
            )  # fmt: skip
        finally:
            await system.stop()


async def run_backend(target: Target, entries: list[Entry], plan: Plan, rec: Recorder) -> None:
    """Every selected system on ``target``: writes and reads on its own store, then W4 and scale."""
    rec.backend = target.backend
    chosen = [e for e in entries if target.backend in e.backends and plan.picks(e)]
    for entry in chosen:
        rec.families[entry.name] = entry.family
        if entry.missing:
            for workload in plan.workloads:
                rec.note(entry.name, workload, entry.missing)
            continue
        system = entry.build()
        if _WRITES & set(plan.workloads):
            _log(f"{entry.name} on {target.backend}")
            await _guarded(rec, entry.name, ["setup"], lambda s=system: _writes(s, target, plan, rec))  # type: ignore[misc]
    readers = [e.build() for e in chosen if not e.missing]
    schema_readers = [s for s in readers if s.shares_schema]
    if "W4" in plan.workloads:
        for system in readers:
            if not system.shares_schema or RECENT not in system.abilities:
                rec.na(system.name, "W4")
        sizes = plan.sizes
        layout = Layout(1, sizes.w4_conversations, sizes.w4_messages_each, sizes.w4_other_users, 20)
        await _reads(schema_readers, target, plan, rec, layout, "", long=False)
    for label, layout in w.scale_layouts(plan.scale, plan.sizes):
        await _reads(schema_readers, target, plan, rec, layout, f"@{label}", long=True)
    if "W6" in plan.workloads:
        await run_w6(target, plan.sizes, plan.only, rec)
