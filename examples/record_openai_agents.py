"""Record OpenAI Agents SDK runs with ChatMemorySession: two runs, one conversation, two models.

Offline by default: the SDK's own ScriptedModel plays the model. With --live (and
OPENAI_API_KEY set), gpt-4.1-mini and gpt-4.1 answer instead.

    uv run examples/record_openai_agents.py [--url URL] [--live]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Iterable
from typing import Any

from _transcript import print_conversation
from agents import Agent, Model, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from chatmemory_openai_agents import ChatMemorySession

from chatmemory import ChatMemory, Principal


@function_tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return f"{city}: -2 °C, light snow"


class NamedScriptedModel(ScriptedModel):
    """The SDK's scripted model with a name, as real models have; the name is recorded as the run's model."""

    def __init__(self, name: str, steps: Iterable[Any]) -> None:
        super().__init__(steps)
        self.model = name


def require_key() -> None:
    """``--live`` needs a provider key; without one, stop before anything is recorded."""
    if not os.environ.get("OPENAI_API_KEY"):
        raise SystemExit("--live needs OPENAI_API_KEY set")


def pick_models(live: bool) -> tuple[Model | str, Model | str]:
    """Real models with ``--live``, else scripted ones that call the tool, then answer."""
    if live:
        require_key()
        return "gpt-4.1-mini", "gpt-4.1"
    set_tracing_disabled(True)  # offline: there is nowhere to send traces
    first = NamedScriptedModel(
        "scripted-mini",
        [
            [function_call("get_weather", {"city": "Oslo"}, call_id="call_1")],
            [assistant_message("It is -2 °C with light snow in Oslo.")],
        ],
    )
    second = NamedScriptedModel("scripted-large", [[assistant_message("Pack boots, gloves and a wool hat.")]])
    return first, second


async def main(url: str | None, live: bool) -> None:
    first, second = pick_models(live)
    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(Principal("alice"))
        conversation = await chat.start_conversation("Oslo weather (openai-agents)")
        session = ChatMemorySession(chat, conversation.id, metadata={"example": "record_openai_agents"})

        agent = Agent(name="travel", instructions="Answer in one sentence.", model=first, tools=[get_weather])
        result = await session.run(agent, "What is the weather in Oslo today?")  # history 1
        print(f"run 1 answered: {result.final_output}")

        # The session loads the stored conversation, so the second run (another model) sees the first.
        result = await session.run(agent.clone(model=second), "What should I pack, then?")  # history 2
        print(f"run 2 answered: {result.final_output}\n")

        print_conversation(await chat.get_conversation(conversation.id, messages=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("CHATMEMORY_URL"), help="database URL")
    parser.add_argument("--live", action="store_true", help="real models (needs an API key; costs money)")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.live))
