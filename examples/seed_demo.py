"""Fill a database with a realistic demo data set, then print what is in it.

Tenant ``acme`` has three users (alice, bob, carol) and an admin (ops). Their conversations
have titles and runs driven by different models, tool calls and results, an image and a file
by URL, reasoning, a pending and a failed message, a failed run, and an archived, a pinned and
a soft-deleted conversation.

    uv run examples/seed_demo.py                     # $CHATMEMORY_URL, else the default SQLite file
    uv run examples/seed_demo.py --url sqlite:///demo.db
"""

from __future__ import annotations

import argparse
import asyncio
import os
from uuid import UUID

from chatmemory import (
    ChatMemory,
    FilePart,
    ImagePart,
    NewMessage,
    Principal,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatmemory.scope import Scope

TENANT = "acme"
ALICE = Principal("alice", tenant=TENANT)
BOB = Principal("bob", tenant=TENANT)
CAROL = Principal("carol", tenant=TENANT)
OPS = Principal("ops", tenant=TENANT, admin=True)

TRAVEL = ["You are a travel assistant. Be brief."]
OPERA = "https://upload.wikimedia.org/wikipedia/commons/3/3d/Oslo_Opera_House_seen_from_Langkaia.JPG"


async def record(
    chat: Scope,
    conversation_id: UUID,
    model: str,
    messages: list[NewMessage],
    *,
    system: list[str] | None = None,
    usage: dict[str, int] | None = None,
) -> None:
    """One completed run: start a history, append its messages in one call, finish it."""
    run = await chat.start_history(conversation_id, model=model, system_prompts=system)
    await chat.append_messages(run.id, messages)
    await chat.finish_history(run.id, usage=usage)


async def seed_alice(chat: Scope) -> UUID:
    """alice's conversations; returns the id of the pinned one."""
    trip = await chat.start_conversation("Trip to Oslo", metadata={"app": "travel-assistant"})
    weather = ToolCallPart(id="call_w1", name="get_weather", arguments={"city": "Oslo", "month": "March"})
    await record(
        chat,
        trip.id,
        "gpt-4.1",
        [
            NewMessage("user", "What should I pack for Oslo in March?"),
            NewMessage("assistant", [weather]),
            NewMessage("tool", [ToolResultPart(call_id="call_w1", content="-4 to 3 °C, snow or sleet")]),
            NewMessage("assistant", "Expect -4 to 3 °C with snow: warm layers, waterproof boots, a hat."),
        ],
        system=TRAVEL,
        usage={"input_tokens": 412, "output_tokens": 58},
    )
    await record(
        chat,
        trip.id,
        "claude-sonnet-4-5",
        [
            NewMessage("user", [TextPart(text="Is this the opera house?"), ImagePart(url=OPERA)]),
            NewMessage("assistant", "Yes, the Oslo Opera House. Walk up its roof for the fjord view."),
            NewMessage("user", "And a fjord cruise?"),
            NewMessage("assistant", "Two-hour cruises leave from Aker Brygge; bring a windproof jacket."),
        ],
        system=TRAVEL,
        usage={"input_tokens": 1630, "output_tokens": 47},
    )
    await chat.update_conversation(trip.id, pinned=True)

    report = await chat.start_conversation("Quarterly report draft", metadata={"app": "docs"})
    await record(
        chat,
        report.id,
        "gpt-4.1-mini",
        [
            NewMessage("user", "Summarise Q3: revenue 1.2M, up 8% on Q2."),
            NewMessage("assistant", "Q3 revenue reached 1.2M, 8% above Q2, led by renewals."),
        ],
        system=["You help write business reports."],
    )
    # Asynchronous generation: the app stores a pending placeholder, then settles it later.
    run = await chat.start_history(report.id, model="gpt-4.1-mini")
    pending = NewMessage("assistant", "", status="pending")
    _, failed = await chat.append_messages(run.id, [NewMessage("user", "Draft the outlook."), pending])
    await chat.fail_message(failed.id, error="upstream timeout after 60 s")
    # Still generating: the run stays running and this answer pending.
    await chat.append_messages(run.id, [NewMessage("user", "Try again, shorter."), pending])

    recipes = await chat.start_conversation("Leftover rice ideas")
    await record(
        chat,
        recipes.id,
        "gpt-4o-mini",
        [
            NewMessage("user", "Something quick with leftover rice?"),
            NewMessage("assistant", "Fried rice: egg, spring onion, soy sauce, five minutes in a hot pan."),
        ],
    )
    await chat.update_conversation(recipes.id, archived=True)

    scratch = await chat.start_conversation("Scratch")
    await record(chat, scratch.id, "gpt-4.1", [NewMessage("user", "test"), NewMessage("assistant", "Hi!")])
    await chat.delete_conversation(scratch.id)  # soft delete: no read returns it any more
    return trip.id


async def seed_bob(chat: Scope) -> None:
    flaky = await chat.start_conversation("Flaky CI test", metadata={"repo": "acme/uploader"})
    thought = ReasoningPart(text="Both workers write to the same temporary directory.")
    await record(
        chat,
        flaky.id,
        "o4-mini",
        [
            NewMessage("user", "test_upload fails about one run in ten. Why?"),
            NewMessage("assistant", [thought, TextPart(text="Workers share tmp_dir; use tmp_path.")]),
        ],
        usage={"input_tokens": 220, "output_tokens": 31, "reasoning_tokens": 512},
    )
    run = await chat.start_history(flaky.id, model="gemini-2.5-pro")
    await chat.append_messages(run.id, [NewMessage("user", "Show me the fix as a diff.")])
    await chat.finish_history(run.id, status="failed", error="RateLimitError: 429 Too Many Requests")

    spanish = await chat.start_conversation("Spanish practice")
    await record(
        chat,
        spanish.id,
        "llama-3.3-70b",
        [
            NewMessage("user", "¿Cómo se dice 'boarding pass'?"),
            NewMessage("assistant", "Se dice «tarjeta de embarque»."),
        ],
    )


async def seed_carol(chat: Scope) -> None:
    invoice = await chat.start_conversation("Invoice 2024-117")
    pdf = FilePart(url="https://example.com/invoices/2024-117.pdf", filename="2024-117.pdf")
    await record(
        chat,
        invoice.id,
        "gpt-4.1",
        [
            NewMessage("user", [TextPart(text="What is the total of this invoice?"), pdf]),
            NewMessage("assistant", "The total is EUR 1,840.00, due on 30 November."),
        ],
    )


async def print_summary(memory: ChatMemory) -> None:
    for principal in (ALICE, BOB, CAROL, OPS):
        chat = memory.scoped(principal)
        page = await chat.list_conversations(limit=100, archived=None)  # archived ones too
        role = " (admin: sees the whole tenant)" if principal.admin else ""
        count = len(page.items)
        print(f"{principal.id}@{principal.tenant}{role}: {count} conversation{'s' if count != 1 else ''}")
        for summary in page.items:
            detail = await chat.get_conversation(summary.id)
            models = ", ".join(h.model for h in detail.histories)
            flags = "pinned" if summary.pinned else "archived" if summary.archived else ""
            print(
                f"  {summary.id}  {summary.title:<24} {flags:<8} owner={summary.owner_id:<6}"
                f" {summary.message_count:>2} messages  runs: {models}"
            )


async def main(url: str | None) -> None:
    async with ChatMemory.open(url) as memory:
        trip = await seed_alice(memory.scoped(ALICE))
        await seed_bob(memory.scoped(BOB))
        await seed_carol(memory.scoped(CAROL))
        # An admin manages any conversation in its tenant.
        ops = memory.scoped(OPS)
        flaky = next(c for c in (await ops.list_conversations()).items if c.title == "Flaky CI test")
        await ops.update_conversation(flaky.id, metadata={**flaky.metadata, "reviewed_by": "ops"})

        print(f"Seeded {memory.engine.url.render_as_string(hide_password=True)}")
        await print_summary(memory)
        print("(alice's conversation 'Scratch' was soft-deleted, so no one sees it.)")
        print(f"Replay one:  uv run examples/replay.py {trip} --as alice --tenant acme")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("CHATMEMORY_URL"), help="database URL")
    asyncio.run(main(parser.parse_args().url))
