"""The built wheel carries its migrations and works in a fresh virtual environment."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _run(*args: str | Path, cwd: Path = ROOT) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_wheel_installs_and_migrates(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv, "uv is needed to build and install the wheel"
    _run(uv, "build", "--wheel", "--package", "chatmemory", "--out-dir", tmp_path / "dist")
    (wheel,) = (tmp_path / "dist").glob("chatmemory-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "chatmemory/py.typed",
        "chatmemory/_migrations/env.py",
        "chatmemory/_migrations/script.py.mako",
    } <= names
    assert any(n.startswith("chatmemory/_migrations/versions/0001") for n in names)
    assert not any(n.startswith(("tests/", "migrations/", "plugins/")) for n in names)

    venv = tmp_path / "venv"
    _run(uv, "venv", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _run(uv, "pip", "install", "--python", python, wheel)
    db = tmp_path / "fresh.db"
    # Run from a directory without the source tree, so only the installed wheel is importable.
    out = _run(venv / "bin" / "chatmemory", "migrate", "--url", f"sqlite:///{db}", cwd=tmp_path)
    assert "upgraded empty ->" in out
    assert "schema is current" in _run(
        python, "-m", "chatmemory", "check", "--url", f"sqlite:///{db}", cwd=tmp_path
    )
