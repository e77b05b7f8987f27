"""``python -m benchmarks``: chatmemory, raw drivers on its schema, and peer chat stores, in one run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from benchmarks._data import FULL, QUICK, QUICK_SCALE_STORED, SCALE_STORED
from benchmarks._registry import entries
from benchmarks._runner import ALL_WORKLOADS, Plan, run_backend
from benchmarks._targets import PostgresTarget, SqliteTarget, postgres_server, sqlite_directory
from benchmarks.adapters import w6_tables
from benchmarks.report import Recorder, markdown

PACKAGES = (
    "chatmemory-core", "sqlalchemy", "aiosqlite", "asyncpg", "openai-agents", "langchain-community",
    "google-adk", "pydantic-ai-slim", "langchain", "langchain-core", "langgraph", "langchain-postgres",
    "psycopg",
)  # fmt: skip


def machine() -> str:
    """The machine and package versions, for the report header."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        versions.append(f"at commit {commit}")
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()} "
        f"{platform.release()}; {', '.join(versions)}"
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run that takes seconds")
    parser.add_argument("--scale", action="store_true", help="also W3/W4 at 1k, 100k and 1M stored messages")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON rows")
    parser.add_argument("--workloads", default=",".join(ALL_WORKLOADS), help="a subset, e.g. W1,W3")
    parser.add_argument(
        "--systems", default="", help="only systems whose name contains one of these (comma list)"
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> Recorder:
    """Run the plan on the chosen backends."""
    quick = bool(args.quick)
    plan = Plan(
        sizes=QUICK if quick else FULL,
        workloads=tuple(x.strip().upper() for x in args.workloads.split(",") if x.strip()),
        scale=(QUICK_SCALE_STORED if quick else SCALE_STORED) if args.scale else (),
        only=tuple(x.strip() for x in args.systems.split(",") if x.strip()),
    )
    rec = Recorder()
    known = entries()
    if args.backend in ("sqlite", "both"):
        async with sqlite_directory() as directory:
            sqlite = SqliteTarget(directory)
            rec.settings["sqlite"] = sqlite.settings()
            await run_backend(sqlite, known, plan, rec)
    if args.backend in ("postgres", "both"):
        with postgres_server() as url:
            if url is None:
                rec.backend = "postgres"
                rec.note(
                    "chatmemory",
                    "setup",
                    "no PostgreSQL (set CHATMEMORY_BENCH_POSTGRES_URL or install pgserver)",
                )
            else:
                postgres = PostgresTarget(url)
                await run_backend(postgres, known, plan, rec)
                rec.settings["postgres"] = postgres.settings()
    return rec


def main(argv: list[str] | None = None) -> int:
    """Entry point; prints markdown to stdout and progress to stderr."""
    args = parse(argv)
    rec = asyncio.run(run(args))
    print(f"Machine: {machine()}\n")
    print(markdown(rec, w6_tables))
    if args.json:
        args.json.write_text("")
        rec.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
