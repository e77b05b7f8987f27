"""Record pydantic-ai runs with ChatMemoryCapability: two runs, one conversation, two models.

Offline by default: pydantic-ai's own FunctionModel and TestModel play the models. With
--live and OPENAI_API_KEY (or ANTHROPIC_API_KEY, with the anthropic package) set, real
models answer.

    uv run examples/record_pydantic_ai.py [--url URL]
    uv run --with anthropic examples/record_pydantic_ai.py --live     # with ANTHROPIC_API_KEY set
"""

from __future__ import annotations

import argparse
import asyncio
import os

from _transcript import print_conversation
from chatmemory_pydantic_ai import ChatMemoryCapability
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

from chatmemory import ChatMemory, Principal


def weather_then_answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """An offline model: asks for the weather first, then answers with what the tool returned."""
    returned = [p for p in messages[-1].parts if isinstance(p, ToolReturnPart)]
    if not returned:
        return ModelResponse(parts=[ToolCallPart("get_weather", {"city": "Oslo"})])
    return ModelResponse(parts=[TextPart(f"Right now in {returned[0].content}.")])


def require_key() -> None:
    """``--live`` needs a provider key; without one, stop before anything is recorded."""
    if not any(os.environ.get(key) for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")):
        raise SystemExit("--live needs OPENAI_API_KEY or ANTHROPIC_API_KEY set")


def pick_models(live: bool) -> tuple[Model | str, Model | str]:
    """Real models with ``--live`` (and an API key), else pydantic-ai's offline ones."""
    if live:
        require_key()
        if os.environ.get("OPENAI_API_KEY"):
            return "openai:gpt-4.1-mini", "openai:gpt-4.1"
        return "anthropic:claude-haiku-4-5", "anthropic:claude-sonnet-4-5"
    packing = TestModel(
        call_tools=[], custom_output_text="Pack boots, gloves and a wool hat.", model_name="test-packing"
    )
    return FunctionModel(weather_then_answer, model_name="function-weather"), packing


async def main(url: str | None, live: bool) -> None:
    first, second = pick_models(live)
    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(Principal("alice"))
        conversation = await chat.start_conversation("Oslo weather (pydantic-ai)")
        memory_capability = ChatMemoryCapability(
            chat, conversation.id, metadata={"example": "record_pydantic_ai"}
        )
        agent = Agent(first, instructions="Answer in one sentence.", capabilities=[memory_capability])

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """Today's weather in a city."""
            return f"{city}: -2 °C, light snow"

        result = await agent.run("What is the weather in Oslo today?")  # history 1
        print(f"run 1 answered: {result.output}")

        # The capability loads the stored conversation, so the second run (another model) sees the first.
        result = await agent.run("What should I pack, then?", model=second)  # history 2
        print(f"run 2 answered: {result.output}\n")

        print_conversation(await chat.get_conversation(conversation.id, messages=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("CHATMEMORY_URL"), help="database URL")
    parser.add_argument("--live", action="store_true", help="real models (needs an API key; costs money)")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.live))
