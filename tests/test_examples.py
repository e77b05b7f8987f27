"""Every example runs as a user runs it (a subprocess from the repository root), offline, on a
temporary database, and prints what its README promises; what it stored is checked too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatmemory import ChatMemory, ConversationNotFound, Principal
from tests.readme_snippets import python_blocks

ROOT = Path(__file__).resolve().parents[1]
ACME = "acme"
# Model-provider credentials and tracing switches never reach an example: the tests stay offline.
_STRIPPED_PREFIXES = (
    "OPENAI_",
    "ANTHROPIC_",
    "GEMINI_",
    "GOOGLE_",
    "LANGSMITH_",
    "LANGCHAIN_",
    "CHATMEMORY_",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_API_TOKEN")) and not k.startswith(_STRIPPED_PREFIXES)
    }
    return env | extra


def run_example(name: str, *args: str, env: dict[str, str] | None = None, ok: bool = True) -> str:
    """Run ``examples/<name>.py``; its standard output (its standard error when ``ok`` is false)."""
    done = subprocess.run(
        [sys.executable, f"examples/{name}.py", *args],
        cwd=ROOT,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    if not ok:
        assert done.returncode != 0, done.stdout
        return done.stderr
    assert done.returncode == 0, done.stderr
    return done.stdout


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def conversation_id(output: str, title: str) -> str:
    match = re.search(rf"^\s+([0-9a-f-]{{36}})\s+{re.escape(title)}\b", output, re.MULTILINE)
    assert match, output
    return match[1]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A SQLite database filled by seed_demo, and what seed_demo printed."""
    url = sqlite_url(tmp_path_factory.mktemp("seeded") / "demo.db")
    return url, run_example("seed_demo", "--url", url)


def test_quickstart_writes_where_chatmemory_url_points(tmp_path: Path) -> None:
    db = tmp_path / "quick.db"
    out = run_example("quickstart", env=clean_env(CHATMEMORY_URL=sqlite_url(db)))

    lines = out.splitlines()
    assert re.match(r"\s*1 user\s+What should I pack for Oslo in March\?", lines[0])
    assert re.match(r"\s*2 assistant\s+gpt-4\.1\s+Warm layers", lines[1])
    assert re.match(r"\s*4 assistant\s+claude-sonnet-4\s+A windproof jacket", lines[3])
    assert "Trip to Oslo: 4 messages, last: 'A windproof jacket and sunglasses.'" in out
    assert out.rstrip().endswith(f"stored in {db}")
    assert db.exists()


def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    (quickstart, *_) = python_blocks("README.md")
    script = tmp_path / "readme_quickstart.py"
    script.write_text(quickstart, encoding="utf-8")
    db = tmp_path / "readme.db"
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=clean_env(CHATMEMORY_URL=sqlite_url(db)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1 user None Hi", "2 assistant gpt-4.1 Hello!"]
    assert db.exists()


async def test_seed_demo_builds_the_data_set_it_describes(db_url: str) -> None:
    out = run_example("seed_demo", "--url", db_url)

    listed = re.findall(r"^(\w+)@acme.*: (\d+ conversations?)$", out, re.MULTILINE)
    assert listed == [
        ("alice", "3 conversations"),
        ("bob", "2 conversations"),
        ("carol", "1 conversation"),
        ("ops", "6 conversations"),
    ]
    assert re.search(
        r"Trip to Oslo\s+pinned\s+owner=alice\s+8 messages\s+runs: gpt-4.1, claude-sonnet-4-5", out
    )
    assert re.search(r"Leftover rice ideas\s+archived\s+owner=alice", out)
    assert re.search(r"Flaky CI test\s+owner=bob\s+3 messages\s+runs: o4-mini, gemini-2.5-pro", out)
    assert not re.search(r"^\s+\S+\s+Scratch", out, re.MULTILINE)

    async with ChatMemory.open(db_url) as memory:
        alice = memory.scoped(Principal("alice", tenant=ACME))
        report = await alice.get_conversation(conversation_id(out, "Quarterly report draft"), messages=True)
        draft = report.histories[1]
        assert draft.status == "running"
        assert [(m.role, m.status) for m in draft.messages or []] == [
            ("user", "complete"),
            ("assistant", "error"),
            ("user", "complete"),
            ("assistant", "pending"),
        ]
        trip = await alice.get_conversation(conversation_id(out, "Trip to Oslo"), messages=True)
        parts = [p.type for h in trip.histories for m in h.messages or [] for p in m.parts or []]
        assert {"tool_call", "tool_result", "image"} <= set(parts)
        assert [h.usage for h in trip.histories] == [
            {"input_tokens": 412, "output_tokens": 58},
            {"input_tokens": 1630, "output_tokens": 47},
        ]
        everything = await alice.list_conversations(archived=None)
        assert "Scratch" not in [c.title for c in everything.items]

        bob = memory.scoped(Principal("bob", tenant=ACME))
        flaky = await bob.get_conversation(conversation_id(out, "Flaky CI test"))
        assert flaky.metadata["reviewed_by"] == "ops"  # changed by the tenant admin
        assert [(h.status, h.error) for h in flaky.histories][1] == (
            "failed",
            "RateLimitError: 429 Too Many Requests",
        )
        with pytest.raises(ConversationNotFound):
            await bob.get_conversation(trip.id)


@pytest.mark.parametrize("framework", ["pydantic-ai", "openai-agents", "langchain"])
def test_replay_sends_each_turn_its_stored_inputs(seeded: tuple[str, str], framework: str) -> None:
    url, seed_out = seeded
    trip = conversation_id(seed_out, "Trip to Oslo")
    out = run_example("replay", trip, "--url", url, "--as", "alice", "--tenant", ACME, "--with", framework)

    assert re.search(r"^run 1\s+model=gpt-4\.1\s+completed\s+system='You are a travel assistant", out, re.M)
    assert re.search(r"^run 2\s+model=claude-sonnet-4-5\s+completed", out, re.M)
    assert re.search(r"^\s+2 assistant gpt-4\.1\s+→ get_weather\(", out, re.M)
    replayed = out[out.index("\nReplaying") :].strip().splitlines()
    new = "  new     echo                 echo:"
    # The last run by default; every framework is sent the five, then seven, messages before each answer.
    assert replayed == [
        f"Replaying run 2 (model=claude-sonnet-4-5) with {framework}, model=echo",
        "turn 1  (5 messages in, after #5 user)",
        "  stored  claude-sonnet-4-5    Yes, the Oslo Opera House. Walk up its roof for the fjord view.",
        f"{new} 5 messages in, the last user message was 'Is this the opera house?'",
        "turn 2  (7 messages in, after #7 user)",
        "  stored  claude-sonnet-4-5    Two-hour cruises leave from Aker Brygge; bring a windproof jacket.",
        f"{new} 7 messages in, the last user message was 'And a fjord cruise?'",
    ]


def test_replay_of_a_chosen_run_with_tool_calls(seeded: tuple[str, str]) -> None:
    url, seed_out = seeded
    trip = conversation_id(seed_out, "Trip to Oslo")
    out = run_example("replay", trip, "--url", url, "--as", "alice", "--tenant", ACME, "--history", "1")

    replayed = out[out.index("\nReplaying") :].strip().splitlines()
    assert replayed[0] == "Replaying run 1 (model=gpt-4.1) with pydantic-ai, model=echo"
    assert replayed[1] == "turn 1  (1 messages in, after #1 user)"
    assert re.fullmatch(
        r"  stored  gpt-4\.1\s+→ get_weather\(\{\"city\": \"Oslo\", \"month\": \"March\"\}\)", replayed[2]
    )
    assert replayed[4] == "turn 2  (3 messages in, after #3 tool)"
    assert re.fullmatch(r"  stored  gpt-4\.1\s+Expect -4 to 3 °C with snow.*", replayed[5])
    assert "echo: 3 messages in" in replayed[6]


def test_replay_as_someone_else_finds_nothing(seeded: tuple[str, str]) -> None:
    url, seed_out = seeded
    trip = conversation_id(seed_out, "Trip to Oslo")
    err = run_example("replay", trip, "--url", url, "--as", "bob", "--tenant", ACME, ok=False)
    assert f"conversation {trip} not found" in err


def test_replay_of_a_run_without_answers(seeded: tuple[str, str]) -> None:
    url, seed_out = seeded
    flaky = conversation_id(seed_out, "Flaky CI test")
    out = run_example("replay", flaky, "--url", url, "--as", "bob", "--tenant", ACME, "--history", "2")
    assert "error='RateLimitError: 429 Too Many Requests'" in out
    assert out.rstrip().endswith("run 2 has no complete assistant answer to replay")


@pytest.mark.parametrize("script", ["record_openai_agents", "record_pydantic_ai", "record_langchain"])
def test_a_live_run_without_an_api_key_stops_before_recording(tmp_path: Path, script: str) -> None:
    url = sqlite_url(tmp_path / "record.db")
    err = run_example(script, "--url", url, "--live", ok=False)
    assert "--live needs OPENAI_API_KEY" in err
    assert not (tmp_path / "record.db").exists()


@pytest.mark.parametrize(
    ("script", "framework", "models"),
    [
        ("record_openai_agents", "openai-agents", ("scripted-mini", "scripted-large")),
        ("record_pydantic_ai", "pydantic-ai", ("function-weather", "test-packing")),
        ("record_langchain", "langchain", ("fake-chat-mini", "fake-chat-large")),
    ],
)
async def test_record_two_runs_with_model_provenance(
    tmp_path: Path, script: str, framework: str, models: tuple[str, str]
) -> None:
    url = sqlite_url(tmp_path / "record.db")
    # An API key in the environment does not make an example call a real model: only --live does.
    out = run_example(script, "--url", url, env=clean_env(OPENAI_API_KEY="sk-not-a-key"))

    first, second = models
    assert "run 2 answered: Pack boots, gloves and a wool hat." in out
    assert re.search(rf"^run 1\s+model={first}\s+completed\s+system='Answer in one sentence.'", out, re.M)
    assert re.search(rf"^run 2\s+model={second}\s+completed", out, re.M)
    assert re.search(rf"^\s+2 assistant {first}\s+→ get_weather\(", out, re.M)
    assert re.search(r"^\s+3 tool\s+← Oslo: -2 °C, light snow$", out, re.M)
    assert re.search(rf"^\s+6 assistant {second}\s+Pack boots", out, re.M)

    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(Principal("alice"))
        (summary,) = (await chat.list_conversations()).items
        detail = await chat.get_conversation(summary.id, messages=True)
        assert [h.model for h in detail.histories] == list(models)
        assert all(h.metadata and h.metadata["example"] == script for h in detail.histories)
        assert [m.seq for m in await chat.transcript(summary.id)] == [1, 2, 3, 4, 5, 6]

    # Replayed through the same framework, the messages go back in its own recorded form.
    out = run_example("replay", str(summary.id), "--url", url, "--with", framework, "--history", "1")
    replayed = out[out.index("\nReplaying") :].strip().splitlines()
    assert replayed[0] == f"Replaying run 1 (model={first}) with {framework}, model=echo"
    assert replayed[3].endswith(
        "echo: 1 messages in, the last user message was 'What is the weather in Oslo today?'"
    )
    assert replayed[4] == "turn 2  (3 messages in, after #3 tool)"
    assert replayed[6].endswith(
        "echo: 3 messages in, the last user message was 'What is the weather in Oslo today?'"
    )


async def test_mcp_agent_records_through_the_stdio_server(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "mcp.db")
    out = run_example("mcp_agent", "--url", url, "--as", "carol")

    lines = out.splitlines()
    assert lines[0].startswith("connected as carol (stdio); tools: append_messages,")
    assert "get_context" in lines[0]
    assert lines[1].startswith("appended seq [1, 2, 3, 4] to history ")
    assert lines[2] == "re-sent key a2: seq 4 again, nothing added"
    assert lines[3].startswith(
        "history completed, model=claude-sonnet-4-5, client={'name': 'release-writer-app'"
    )
    assert re.fullmatch(r"context: 4 messages, ~\d+ tokens", lines[4])
    assert re.fullmatch(
        r'\s+2 assistant claude-sonnet-4-5\s+\[read_changelog\(\{"since":"v1\.2"\}\)\]', lines[6]
    )
    assert re.fullmatch(r"\s+4 assistant claude-sonnet-4-5\s+v1\.3 adds resumable uploads.*", lines[8])

    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(Principal("carol"))
        (summary,) = (await chat.list_conversations()).items
        assert summary.message_count == 4  # the retried key added nothing
        (history,) = (await chat.get_conversation(summary.id)).histories
        assert history.metadata is not None
        assert history.metadata["agent"] == "release-writer"


async def test_live_chat_pushes_the_placeholder_and_its_completion_to_both_watchers(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "live.db")
    lines = run_example("live_chat", "--url", url).splitlines()

    appended = [
        "message.appended  seq=1 user      'What should I pack for Oslo in March?'",
        "message.appended  seq=2 assistant (pending)",
        "message.completed seq=2 assistant 'Warm layers, waterproof boots and a hat.'",
    ]
    for watcher in ("watch", "sse"):
        assert [line.removeprefix(watcher).strip() for line in lines if line.startswith(watcher)] == appended
    assert "worker completed the placeholder" in lines
    assert lines[-1] == "answer: Warm layers, waterproof boots and a hat. (model gpt-4.1, complete)"

    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(Principal("alice"))
        (summary,) = (await chat.list_conversations()).items
        messages = await chat.transcript(summary.id)
        assert [(m.role, m.status, m.key) for m in messages] == [
            ("user", "complete", "turn-1-user"),
            ("assistant", "complete", "turn-1-reply"),
        ]
