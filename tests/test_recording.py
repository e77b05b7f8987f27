"""Telling a history whose recording process is gone from one still being recorded."""

from __future__ import annotations

import os
import subprocess
import sys

from chatmemory.recording import ABANDONED, LIVE_HISTORIES, abandoned, recorder_metadata
from chatmemory.scope import Scope


async def test_a_running_history_is_abandoned_once_its_recorder_is_gone(alice: Scope) -> None:
    conv = await alice.start_conversation()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(gone.stdout)
    metadata = {"framework": "demo", **recorder_metadata(), "pid": dead_pid}
    dead = await alice.start_history(conv.id, model="m", metadata=metadata)
    assert abandoned(dead, framework="demo")
    assert not abandoned(dead, framework="another")  # only the adapter's own histories

    mine = await alice.start_history(
        conv.id, model="m", metadata={"framework": "demo", **recorder_metadata()}
    )
    assert recorder_metadata()["pid"] == os.getpid()
    assert abandoned(mine, framework="demo")  # this process, but not recording it
    LIVE_HISTORIES.add(mine.id)
    try:
        assert not abandoned(mine, framework="demo")
    finally:
        LIVE_HISTORIES.discard(mine.id)

    closed = await alice.finish_history(dead.id, status="failed", error=ABANDONED)
    assert not abandoned(closed, framework="demo")
    elsewhere = await alice.start_history(
        conv.id, model="m", metadata={"framework": "demo", "host": "another-host", "pid": dead_pid}
    )
    assert not abandoned(elsewhere, framework="demo")
