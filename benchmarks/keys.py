"""``python -m benchmarks.keys``: what idempotency keys cost an append and a run's end.

In one conversation per backend, each call of one message of about 300 characters, three ways,
alternated call by call so that the machine's drift hits them alike:

- ``no key``: the message has none;
- ``new key``: its key is not stored yet (an adapter's usual case). On PostgreSQL the call is
  one statement that does not look the key up (``Stmt.unread_keys``); on SQLite the key is
  looked up under the write lock first;
- ``stored key``: the key is stored already, so nothing is added and the stored message is the
  answer. On PostgreSQL the one statement is refused by the key index and the call runs again
  as the lock and the lookup (and, for the finish, the finish) in one transaction.

Each round starts a run (``start_run``, not timed), then times ``append_messages`` and
``finish_run`` of one message each. Prints p50 and p99 ms per call and way.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks._data import message, percentile
from benchmarks._targets import targets_of
from chatmemory import ChatMemory, NewMessage, Principal

WAYS = ("no key", "new key", "stored key")


async def timings(url: str, rounds: int) -> dict[tuple[str, str], list[float]]:
    """ms per call, by (call, way)."""
    samples: dict[tuple[str, str], list[float]] = {
        (call, way): [] for call in ("append_messages", "finish_run") for way in WAYS
    }
    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(Principal("keys"))
        conversation = await chat.start_conversation("keys")
        for i in range(rounds + 5):  # the first five warm the connections and statements up
            for way in WAYS:
                n = i * len(WAYS) + WAYS.index(way)
                text = message("keys", n).text

                def key(part: str, n: int = n, way: str = way) -> str | None:
                    return None if way == "no key" else f"{n}-{part}"

                first = [NewMessage("user", text, key=key("first"))]
                run = await chat.start_run(conversation.id, model="bench-model", messages=first)
                again = key("first") if way == "stored key" else key("append")
                start = time.perf_counter()
                await chat.append_messages(run.history.id, [NewMessage("assistant", text, key=again)])
                appended = time.perf_counter()
                last = key("first") if way == "stored key" else key("last")
                await chat.finish_run(run.history.id, messages=[NewMessage("assistant", text, key=last)])
                finished = time.perf_counter()
                if i >= 5:
                    samples["append_messages", way].append((appended - start) * 1000)
                    samples["finish_run", way].append((finished - appended) * 1000)
    return samples


async def main(args: argparse.Namespace) -> None:
    async with targets_of(args.backend) as targets:
        for target in targets:
            store = await target.fresh("keys")
            samples = await timings(store.url, args.rounds)
            print(f"\n### {target.backend}\n")
            print("| call | " + " | ".join(f"{way} p50 ms | {way} p99 ms" for way in WAYS) + " |")
            print("|---|" + "---|---|" * len(WAYS))
            for call in ("append_messages", "finish_run"):
                cells = (
                    f"{percentile(samples[call, way], 0.5):.3f} | {percentile(samples[call, way], 0.99):.3f}"
                    for way in WAYS
                )
                print(f"| {call} | " + " | ".join(cells) + " |", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keys", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=300, help="calls timed per call and way (default 300)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
