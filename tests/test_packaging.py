"""Every distribution (the core and each ``plugins/*``) builds a wheel and an sdist with the
metadata an index needs, and they install into fresh virtual environments and import.

Distributions are discovered from ``plugins/*/pyproject.toml``, so a new plugin is checked
without touching this file. Everything is built once (``uv build --all-packages``: each
sdist, then each wheel from its sdist) and the wheels are installed into one environment,
pinned to the workspace lock so the installs come from uv's cache; a second, minimal
environment holds the core alone, without its extras.
"""

from __future__ import annotations

import email
import email.message
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import chatmemory

ROOT = Path(__file__).parent.parent
CORE = "chatmemory-core"


@dataclass(frozen=True)
class Project:
    """One distribution of the workspace, as its ``pyproject.toml`` declares it."""

    directory: Path
    config: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.config["project"]["name"])

    @property
    def version(self) -> str:
        return str(self.config["project"]["version"])

    @property
    def import_name(self) -> str:
        (package,) = self.config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
        return Path(package).name

    @property
    def stem(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}"


def _projects() -> list[Project]:
    found = [ROOT / "pyproject.toml", *sorted(ROOT.glob("plugins/*/pyproject.toml"))]
    return [Project(path.parent, tomllib.loads(path.read_text())) for path in found]


PROJECTS = _projects()
BY_NAME = {p.name: p for p in PROJECTS}
PLUGINS = [p for p in PROJECTS if p.name != CORE]


def _run(*args: str | Path, cwd: Path = ROOT) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _uv() -> str:
    uv = shutil.which("uv")
    assert uv, "uv is needed to build and install the distributions"
    return uv


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every distribution's sdist, and its wheel built from that sdist (so every wheel
    installed below proves its sdist builds).

    Built once per run: pytest-xdist workers share one temporary root, and whichever needs
    the files first builds them there while holding a lock.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = root / "dist"
    with (root / "dist.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "dist.built").exists():
            shutil.rmtree(out, ignore_errors=True)
            _run(_uv(), "build", "--all-packages", "--out-dir", out)
            (root / "dist.built").touch()
    return out


def _wheel(dist: Path, project: Project) -> Path:
    (wheel,) = dist.glob(f"{project.stem}-py3-none-any.whl")
    return wheel


def _sdist(dist: Path, project: Project) -> Path:
    return dist / f"{project.stem}.tar.gz"


def _venv(where: Path) -> Path:
    _run(_uv(), "venv", "--python", sys.executable, where)
    return where / "bin" / "python"


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One environment with every wheel (the core with all its extras), pinned to the lock."""
    work = tmp_path_factory.mktemp("everything")
    constraints = work / "constraints.txt"
    _run(
        _uv(),
        *("export", "--frozen", "--all-packages", "--no-emit-workspace", "--no-dev", "--all-extras"),
        *("--no-hashes", "--quiet", "--output-file", constraints),
    )
    python = _venv(work / "venv")
    extras = ",".join(BY_NAME[CORE].config["project"]["optional-dependencies"])
    wheels = [f"{_wheel(dist, BY_NAME[CORE])}[{extras}]", *(_wheel(dist, p) for p in PLUGINS)]
    _run(_uv(), "pip", "install", "--python", python, "--constraint", constraints, *wheels, cwd=work)
    return python


# -- what the sources declare ---------------------------------------------------------------


def test_versions_move_in_lockstep() -> None:
    version = BY_NAME[CORE].version
    assert {p.name: p.version for p in PROJECTS} == dict.fromkeys(BY_NAME, version)
    assert chatmemory.__version__ == version
    for plugin in PLUGINS:
        wanted = [d for d in plugin.config["project"]["dependencies"] if re.match(r"chatmemory\b", d)]
        # The core, and any sibling a plugin builds on (chatmemory-mcp on chatmemory-server), exactly.
        assert wanted[0] == f"{CORE}=={version}", plugin.name
        assert all(re.fullmatch(rf"chatmemory-[a-z-]+=={re.escape(version)}", d) for d in wanted), plugin.name


def test_every_plugin_is_part_of_the_workspace() -> None:
    """The development environment, its sources and the type check cover each plugin."""
    root = BY_NAME[CORE].config
    dev = set(root["dependency-groups"]["dev"])
    for plugin in PLUGINS:
        assert plugin.name in dev, plugin.name
        assert root["tool"]["uv"]["sources"][plugin.name] == {"workspace": True}
        sources = plugin.config["tool"]["uv"]["sources"]
        for dependency in plugin.config["project"]["dependencies"]:
            if dependency.startswith("chatmemory-"):
                assert sources[dependency.split("==")[0]] == {"workspace": True}, plugin.name
        source = str((plugin.directory / "src").relative_to(ROOT))
        assert source in root["tool"]["mypy"]["files"], plugin.name


# -- what the built files carry -------------------------------------------------------------


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_string(archive.read(path).decode("utf-8"))


@pytest.mark.parametrize("name", list(BY_NAME))
def test_each_distribution_carries_its_metadata(dist: Path, name: str) -> None:
    project = BY_NAME[name]
    wheel = _wheel(dist, project)
    meta = _metadata(wheel)
    assert (meta["Name"], meta["Version"]) == (name, project.version)
    assert meta["Summary"] and meta["Requires-Python"] == ">=3.11"
    assert meta["License-Expression"] == "MIT"
    classifiers = set(meta.get_all("Classifier") or ())
    assert {"Typing :: Typed", "Programming Language :: Python :: 3.11"} <= classifiers
    urls = {entry.split(",")[0] for entry in meta.get_all("Project-URL") or ()}
    assert {"Homepage", "Repository", "Issues"} <= urls
    assert meta["Description-Content-Type"] == "text/markdown"
    readme = (project.directory / "README.md").read_text()
    assert meta.get_payload().strip() == readme.strip()

    names = set(zipfile.ZipFile(wheel).namelist())
    assert f"{project.import_name}/py.typed" in names
    assert not any(n.startswith(("tests/", "plugins/", "src/", "benchmarks/", "examples/")) for n in names)

    with tarfile.open(_sdist(dist, project)) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= members
    assert any(m.endswith(f"{project.import_name}/py.typed") for m in members)
    assert not any(m.startswith(("tests/", "plugins/", ".venv/")) for m in members)


def test_the_core_wheel_ships_its_migrations(dist: Path) -> None:
    names = set(zipfile.ZipFile(_wheel(dist, BY_NAME[CORE])).namelist())
    assert {"chatmemory/_migrations/env.py", "chatmemory/_migrations/script.py.mako"} <= names
    assert any(n.startswith("chatmemory/_migrations/versions/0001") for n in names)


# -- installing -----------------------------------------------------------------------------


def _imports(python: Path, cwd: Path) -> None:
    names = ", ".join(p.import_name for p in PROJECTS)
    versions = ", ".join(repr(p.name) for p in PROJECTS)
    check = f"import importlib.metadata as m, {names}; print(sorted({{m.version(d) for d in ({versions},)}}))"
    # Run away from the source tree, so only the installed distributions are importable.
    assert _run(python, "-c", check, cwd=cwd).strip() == f"['{BY_NAME[CORE].version}']"


def test_everything_installs_together_and_imports(installed: Path, tmp_path: Path) -> None:
    _imports(installed, tmp_path)
    db = tmp_path / "fresh.db"
    out = _run(installed.parent / "chatmemory", "migrate", "--url", f"sqlite:///{db}", cwd=tmp_path)
    assert "upgraded empty ->" in out
    assert "usage" in _run(installed.parent / "chatmemory-mcp", "--help", cwd=tmp_path)
    assert "usage" in _run(installed.parent / "chatmemory-server", "--help", cwd=tmp_path)


def test_the_core_sdist_alone_runs_on_sqlite_without_its_extras(dist: Path, tmp_path: Path) -> None:
    """Installed from its sdist, without asyncpg or rich: SQLite works, the command line
    prints plain lines, and a PostgreSQL URL says which extra to install."""
    python = _venv(tmp_path / "venv")
    # From the sdist: installing builds it as a user's installer would.
    _run(_uv(), "pip", "install", "--python", python, _sdist(dist, BY_NAME[CORE]), cwd=tmp_path)
    db = f"sqlite:///{tmp_path / 'fresh.db'}"
    script = f"""
import asyncio, sys
from chatmemory import ChatMemory, InvalidInputError, NewMessage, Principal

async def main():
    async with ChatMemory.open({db!r}) as memory:
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation(title="Trip")
        run = await chat.start_history(conv.id, model="gpt-4.1")
        await chat.append_messages(run.id, [NewMessage(role="user", content="Hi")])
        print(len(await chat.transcript(conv.id)))
    try:
        await ChatMemory.open("postgresql://u@localhost/db")
    except InvalidInputError as error:
        print(error)
    print(sorted({{"asyncpg", "rich"}} & {{m.split(".")[0] for m in sys.modules}}))

asyncio.run(main())
"""
    lines = _run(python, "-c", script, cwd=tmp_path).splitlines()
    assert lines[0] == "1"
    assert "pip install 'chatmemory-core[postgres]'" in lines[1]
    assert lines[2] == "[]"
    missing = "import importlib.util as u; print([u.find_spec(m) is None for m in ('asyncpg', 'rich')])"
    assert _run(python, "-c", missing, cwd=tmp_path).strip() == "[True, True]"

    listed = _run(tmp_path / "venv" / "bin" / "chatmemory", "ls", "--url", db, "--as", "alice", cwd=tmp_path)
    assert listed.split("\t")[1:3] == ["Trip", "1"]
    assert "schema is current" in _run(python, "-m", "chatmemory", "check", "--url", db, cwd=tmp_path)
