"""chatmemory in a minute: record an agent run, then read it back. Uses the embedded SQLite default."""

import asyncio

from chatmemory import ChatMemory, NewMessage, Principal


async def main() -> None:
    async with ChatMemory.open() as memory:  # $CHATMEMORY_URL, else a SQLite file in your data directory
        chat = memory.scoped(Principal("alice"))
        conv = await chat.start_conversation(title="Trip to Oslo", metadata={"app": "quickstart"})

        run = await chat.start_history(conv.id, model="gpt-4.1", system_prompts=["Be brief."])
        await chat.append_messages(
            run.id,
            [
                NewMessage("user", "What should I pack for Oslo in March?"),
                NewMessage("assistant", "Warm layers, waterproof boots and a hat."),  # model = gpt-4.1
            ],
        )
        await chat.finish_history(run.id, usage={"input_tokens": 18, "output_tokens": 11})

        run = await chat.start_history(conv.id, model="claude-sonnet-4")  # a second run, another model
        await chat.append_messages(
            run.id,
            [
                NewMessage("user", "And for the fjord cruise?"),
                NewMessage("assistant", "A windproof jacket and sunglasses."),
            ],
        )
        await chat.finish_history(run.id)

        for message in await chat.transcript(conv.id):
            print(f"{message.seq:>2} {message.role:<9} {message.model or '':<16} {message.content}")
        summary = (await chat.list_conversations(limit=1)).items[0]
        print(f"{summary.title}: {summary.message_count} messages, last: {summary.last_message_preview!r}")
        print(f"stored in {memory.engine.url.database}")


if __name__ == "__main__":
    asyncio.run(main())
