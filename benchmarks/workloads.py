"""The workloads W1-W5 and the scale runs, measured on one system at a time."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._data import Sizes, median, message, percentile, turn
from benchmarks._seed import Layout, Seeded
from benchmarks._system import APPEND, CONCURRENT, READ_ALL, READ_LAST, RECENT, SEARCH, System
from benchmarks.report import Recorder

_TAG = re.compile(r"^\[(?P<tag>[^:\]]+):(?P<index>\d+)\]")


async def _latencies(op: Callable[[], Awaitable[Any]], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        await op()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def warm_up(system: System, sizes: Sizes) -> None:
    """Open connections, fill caches and compile statements before anything is timed."""
    conv = await system.conversation("warmup")
    for i in range(sizes.warmup_turns):
        await system.append(conv, turn("warmup", i))
    if READ_LAST in system.abilities:
        await system.read_last(conv, sizes.w3_last)
    await system.read_all(conv)


async def w1_append_turns(system: System, sizes: Sizes, rec: Recorder) -> None:
    """W1: one turn (user + assistant) per call, awaited one by one."""
    conv = await system.conversation("w1")
    samples: list[float] = []
    start = time.perf_counter()
    for i in range(sizes.w1_turns):
        t = time.perf_counter()
        await system.append(conv, turn("w1", i))
        samples.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - start
    rec.add(system.name, "W1", sizes.w1_turns / elapsed, "turns/s")
    rec.add(system.name, "W1.p50", percentile(samples, 0.5), "ms")
    rec.add(system.name, "W1.p99", percentile(samples, 0.99), "ms")


async def w2_append_batches(system: System, sizes: Sizes, rec: Recorder) -> Any:
    """W2: many messages in batches; returns the conversation for W3."""
    conv = await system.conversation("w2")
    batches = [
        [message("w2", i) for i in range(first, min(first + sizes.w2_batch, sizes.w2_messages))]
        for first in range(0, sizes.w2_messages, sizes.w2_batch)
    ]
    start = time.perf_counter()
    for batch in batches:
        await system.append(conv, batch)
    rec.add(system.name, "W2", sizes.w2_messages / (time.perf_counter() - start), "messages/s")
    return conv


async def w3_read(
    system: System, conv: Any, sizes: Sizes, rec: Recorder, *, stored: int, suffix: str = ""
) -> None:
    """W3: the newest page and the whole conversation, checked for correctness."""
    last_text = message("w2", stored - 1).text
    if READ_LAST in system.abilities:
        page = await system.read_last(conv, sizes.w3_last)
        _check(len(page) == sizes.w3_last and page[-1] == last_text, f"{system.name}: wrong newest page")
        samples = await _latencies(lambda: system.read_last(conv, sizes.w3_last), sizes.w3_last_reads)
        rec.add(system.name, "W3.last" + suffix, median(samples), "ms")
    else:
        rec.na(system.name, "W3.last" + suffix)
    everything = await system.read_all(conv)
    _check(len(everything) == stored and everything[-1] == last_text, f"{system.name}: wrong transcript")
    samples = await _latencies(lambda: system.read_all(conv), sizes.w3_all_reads)
    rec.add(system.name, "W3.all" + suffix, median(samples), "ms")


async def w3_seeded(system: System, seeded: Seeded, sizes: Sizes, rec: Recorder, *, suffix: str) -> None:
    """W3 on a bulk-loaded conversation (the scale runs)."""
    page = await system.read_last(seeded.long, sizes.w3_last)
    _check(page[-1] == seeded.long_last_text, f"{system.name}: wrong newest page")
    samples = await _latencies(lambda: system.read_last(seeded.long, sizes.w3_last), sizes.w3_last_reads)
    rec.add(system.name, "W3.last" + suffix, median(samples), "ms")
    everything = await system.read_all(seeded.long)
    _check(everything[-1] == seeded.long_last_text, f"{system.name}: wrong transcript")
    samples = await _latencies(lambda: system.read_all(seeded.long), sizes.w3_all_reads)
    rec.add(system.name, "W3.all" + suffix, median(samples), "ms")


async def w4_recent(system: System, seeded: Seeded, sizes: Sizes, rec: Recorder, *, suffix: str = "") -> None:
    """W4: one user's most recently updated conversations with previews."""
    got = await system.recent(seeded.lister, sizes.w4_page)
    _check(got == seeded.previews, f"{system.name}: wrong conversation list")
    samples = await _latencies(lambda: system.recent(seeded.lister, sizes.w4_page), sizes.w4_reads)
    rec.add(system.name, "W4" + suffix, median(samples), "ms")


async def w5_concurrent(system: System, sizes: Sizes, rec: Recorder) -> None:
    """W5: concurrent writers on one conversation; then check nothing was lost, doubled or reordered."""
    conv = await system.conversation("w5")

    async def writer(k: int) -> None:
        for i in range(sizes.w5_turns):
            await system.append(conv, turn(f"w5-{k}", i))

    start = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(sizes.w5_writers)))
    elapsed = time.perf_counter() - start
    rec.add(system.name, "W5", sizes.w5_writers * sizes.w5_turns / elapsed, "turns/s")
    anomalies, torn = audit(await system.read_all(conv), sizes.w5_writers, 2 * sizes.w5_turns)
    rec.add(system.name, "W5.anomalies", anomalies, "messages")
    rec.add(system.name, "W5.torn", torn, "turns")


async def w7_search(system: System, bulk: Any, sizes: Sizes, rec: Recorder) -> None:
    """W7: the first search after W2's bulk load (it sees all of it), then one search after each
    appended turn, each required to find the turn just written, then searches for a word in
    every bulk message (each ranks them all for its first page of 20)."""
    if SEARCH not in system.abilities:
        raise NotImplementedError
    search = system.search  # type: ignore[attr-defined]
    start = time.perf_counter()
    found = await search(bulk.owner, f'"w2 {sizes.w2_messages - 1}"')
    rec.add(system.name, "W7.bulk", (time.perf_counter() - start) * 1000, "ms")
    _check(any(t.startswith(f"[w2:{sizes.w2_messages - 1}]") for t in found), f"{system.name}: search missed")
    conv = await system.conversation(bulk.owner)
    samples = []
    for i in range(sizes.w7_searches):
        await system.append(conv, turn("w7", i))
        t = time.perf_counter()
        found = await search(bulk.owner, f'"w7 {2 * i + 1}"')
        samples.append((time.perf_counter() - t) * 1000)
        _check(any(x.startswith(f"[w7:{2 * i + 1}]") for x in found), f"{system.name}: search missed")
    rec.add(system.name, "W7", median(samples), "ms")
    # A word in every bulk message: the first page of them all, ranked.
    broad = []
    for _ in range(sizes.w7_broad_searches):
        t = time.perf_counter()
        found = await search(bulk.owner, "w2")
        broad.append((time.perf_counter() - t) * 1000)
        _check(len(found) == 20, f"{system.name}: broad search found {len(found)}")
    rec.add(system.name, "W7.broad", median(broad), "ms")


def audit(texts: list[str], writers: int, per_writer: int) -> tuple[int, int]:
    """(lost + duplicated + out-of-order messages, turns split by another writer's message)."""
    seen: dict[str, list[int]] = {}
    torn = 0
    previous: tuple[str, int] | None = None
    for text in texts:
        match = _TAG.match(text)
        if match is None:
            continue
        tag, index = match["tag"], int(match["index"])
        seen.setdefault(tag, []).append(index)
        if index % 2 == 1 and previous != (tag, index - 1):
            torn += 1
        previous = (tag, index)
    anomalies = 0
    for k in range(writers):
        got = seen.get(f"w5-{k}", [])
        anomalies += len(set(range(per_writer)) - set(got)) + len(got) - len(set(got))
        anomalies += sum(1 for a, b in itertools.pairwise(got) if b <= a)
    return anomalies, torn


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(what)


def scale_layouts(stored: tuple[int, ...], sizes: Sizes) -> list[tuple[str, Layout]]:
    """For each total, a fixed long conversation and user, the rest filled with other users' chats."""
    fixed = sizes.scale_conversation + sizes.scale_user_conversations * sizes.scale_user_messages_each
    layouts = []
    for total in stored:
        other = max(0, total - fixed) // 20
        label = (
            f"{total // 1_000_000}M"
            if total >= 1_000_000
            else f"{total // 1000}k"
            if total >= 1000
            else str(total)
        )
        layouts.append(
            (
                label,
                Layout(
                    sizes.scale_conversation,
                    sizes.scale_user_conversations,
                    sizes.scale_user_messages_each,
                    other,
                    20,
                ),
            )
        )
    return layouts


WORKLOAD_ABILITIES = {"W1": APPEND, "W2": APPEND, "W3": READ_ALL, "W4": RECENT, "W5": CONCURRENT}
