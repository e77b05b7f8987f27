"""Record LangChain agent runs with ChatMemoryMiddleware: two runs, one conversation, two models.

Offline by default: LangChain's GenericFakeChatModel plays the models. With --live and
OPENAI_API_KEY (or ANTHROPIC_API_KEY) set, real models answer; they need LangChain's provider
package:

    uv run examples/record_langchain.py [--url URL]
    uv run --with langchain-openai examples/record_langchain.py --live        # OPENAI_API_KEY set
    uv run --with langchain-anthropic examples/record_langchain.py --live     # ANTHROPIC_API_KEY set
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from _transcript import print_conversation
from chatmemory_langchain import ChatMemoryMiddleware
from langchain.agents import create_agent
from langchain.chat_models import init_chat_model
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool

from chatmemory import ChatMemory, Principal


@tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return f"{city}: -2 °C, light snow"


class FakeChat(GenericFakeChatModel):
    """LangChain's fake chat model with a model name (recorded as the run's model) and tool binding."""

    model_name: str = "fake-chat"

    def bind_tools(self, tools: Any, **kwargs: Any) -> FakeChat:
        return self  # the scripted replies already hold the tool calls


def require_key() -> None:
    """``--live`` needs a provider key; without one, stop before anything is recorded."""
    if not any(os.environ.get(key) for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")):
        raise SystemExit("--live needs OPENAI_API_KEY or ANTHROPIC_API_KEY set")


def pick_models(live: bool) -> tuple[BaseChatModel, BaseChatModel]:
    """Real models with ``--live`` (and an API key), else fakes that reply from a script."""
    if live:
        require_key()
        if os.environ.get("OPENAI_API_KEY"):
            return init_chat_model("openai:gpt-4.1-mini"), init_chat_model("openai:gpt-4.1")
        return init_chat_model("anthropic:claude-haiku-4-5"), init_chat_model("anthropic:claude-sonnet-4-5")
    call = {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_1", "type": "tool_call"}
    weather = iter([AIMessage("", tool_calls=[call]), "It is -2 °C with light snow in Oslo."])
    first = FakeChat(model_name="fake-chat-mini", messages=weather)
    second = FakeChat(model_name="fake-chat-large", messages=iter(["Pack boots, gloves and a wool hat."]))
    return first, second


async def main(url: str | None, live: bool) -> None:
    first, second = pick_models(live)
    async with ChatMemory.open(url) as memory:
        chat = memory.scoped(Principal("alice"))
        conversation = await chat.start_conversation("Oslo weather (langchain)")
        recorder = ChatMemoryMiddleware(chat, conversation.id, metadata={"example": "record_langchain"})

        def agent(model: BaseChatModel) -> Any:
            return create_agent(
                model, [get_weather], system_prompt="Answer in one sentence.", middleware=[recorder]
            )

        question = {"messages": [{"role": "user", "content": "What is the weather in Oslo today?"}]}
        state = await agent(first).ainvoke(question)  # history 1
        print(f"run 1 answered: {state['messages'][-1].text}")

        # The middleware loads the stored conversation, so the second run (another model) sees the first.
        question = {"messages": [{"role": "user", "content": "What should I pack, then?"}]}
        state = await agent(second).ainvoke(question)  # history 2
        print(f"run 2 answered: {state['messages'][-1].text}\n")

        print_conversation(await chat.get_conversation(conversation.id, messages=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("CHATMEMORY_URL"), help="database URL")
    parser.add_argument("--live", action="store_true", help="real models (needs an API key; costs money)")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.live))
