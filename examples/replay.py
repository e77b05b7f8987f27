"""Replay a stored run: what would another model have answered to the same inputs?

Prints each history (run) of a conversation with the model that drove it, then sends the
chosen run's inputs again, turn by turn: for every assistant answer in that run, the
messages that preceded it (plus the run's system prompts) go to a model through a framework,
and the stored answer is printed beside the new one. Stored answers, not new ones, lead into
later turns, so every turn sees exactly what the original model saw.

By default the model is an offline fake that echoes a summary of its input, so this runs
anywhere. The principal must be the conversation's owner (or an admin of its tenant); the
data set of seed_demo.py lives in tenant ``acme``:

    uv run examples/replay.py CONVERSATION_ID --as alice --tenant acme

Name a real model to compare (its API key must be set; ``--as`` defaults to
$CHATMEMORY_PRINCIPAL, else alice):

    uv run examples/replay.py ID --as alice --tenant acme --with pydantic-ai --model openai:gpt-4.1
    uv run examples/replay.py ID --as alice --tenant acme --with openai-agents --model gpt-4.1
    uv run --with langchain-openai examples/replay.py ID --tenant acme --with langchain --model openai:gpt-4.1

Each framework is imported only when chosen, so only that one needs to be installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from _transcript import describe, print_conversation

from chatmemory import ChatMemory, ChatMemoryError, HistoryDetail, Message, Principal
from chatmemory.formats import to_openai
from chatmemory.scope import Scope

FAKE = "echo"
"""The name the offline fake model goes by."""

Ask = Callable[[str | None, list[str], list[Message]], Awaitable[str]]
"""Sends (model or None for the fake, system prompts, input messages) and returns the answer as text."""


def echo(count: int, last_user: str) -> str:
    """The fake model's deterministic answer: a summary of what it was sent."""
    return f"echo: {count} messages in, the last user message was {textwrap.shorten(last_user, 50)!r}"


# -- one small function per framework: stored messages in, the model's answer out -------------


async def ask_pydantic_ai(model: str | None, system: list[str], inputs: list[Message]) -> str:
    from chatmemory_pydantic_ai import to_model_messages
    from pydantic_ai import messages as pai
    from pydantic_ai.direct import model_request
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    def fake(messages: list[pai.ModelMessage], info: AgentInfo) -> pai.ModelResponse:
        requests = [m for m in messages if isinstance(m, pai.ModelRequest)]
        prompts = [p.content for m in requests for p in m.parts if isinstance(p, pai.UserPromptPart)]
        last = prompts[-1] if prompts else ""
        if not isinstance(last, str):  # multimodal: its text items
            last = " ".join(item for item in last if isinstance(item, str))
        return pai.ModelResponse(parts=[pai.TextPart(echo(len(messages), last))])

    history = to_model_messages(inputs)  # exactly as pydantic-ai recorded them, else rebuilt from parts
    has_system = any(isinstance(p, pai.SystemPromptPart) for m in history for p in m.parts)
    if system and not has_system and history and isinstance(history[0], pai.ModelRequest):
        # Where pydantic-ai itself keeps system prompts: at the start of the first request.
        history[0].parts = [*(pai.SystemPromptPart(s) for s in system), *history[0].parts]
    response = await model_request(model or FunctionModel(fake, model_name=FAKE), history)
    calls = [
        f"→ {p.tool_name}({p.args_as_json_str()})" for p in response.parts if isinstance(p, pai.ToolCallPart)
    ]
    return " ".join([response.text or "", *calls])


async def ask_openai_agents(model: str | None, system: list[str], inputs: list[Message]) -> str:
    from agents import ItemHelpers, ModelSettings, ModelTracing, MultiProvider, set_tracing_disabled
    from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message
    from chatmemory_openai_agents import NATIVE_FORMAT

    def fake(call: ModelCall) -> Any:
        users = [i.get("content") for i in call.input if isinstance(i, dict) and i.get("role") == "user"]
        last = users[-1] if users else ""
        text = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last or ())
        return [assistant_message(echo(len(call.input), text))]

    # Items the Agents SDK recorded go back as they were; anything else is converted.
    items: list[Any] = []
    for message in inputs:
        if message.native is not None and message.native.format == NATIVE_FORMAT:
            items.append(message.native.data)
        else:
            items += responses_items(message)
    if model is None:
        set_tracing_disabled(True)
        llm: Any = ScriptedModel([ModelStep.respond(fake)])
    else:
        llm = MultiProvider().get_model(model)
    response = await llm.get_response(
        "\n\n".join(system) or None,
        items,
        ModelSettings(),
        [],
        None,
        [],
        ModelTracing.DISABLED,
        previous_response_id=None,
        conversation_id=None,
        prompt=None,
    )
    out = []
    for item in response.output:
        if item.type == "function_call":
            out.append(f"→ {item.name}({item.arguments})")
        elif item.type == "message":
            out.append(ItemHelpers.extract_last_text(item) or "")
    return " ".join(out)


def responses_items(message: Message) -> list[dict[str, Any]]:
    """A stored message as OpenAI Responses input items, by way of its Chat Completions form."""
    items: list[dict[str, Any]] = []
    for chat in to_openai([message], use_native=False):
        if chat["role"] == "tool":
            items.append(
                {"type": "function_call_output", "call_id": chat["tool_call_id"], "output": chat["content"]}
            )
            continue
        content = chat.get("content") or ""
        if isinstance(content, list):  # multimodal user content
            content = [
                {"type": "input_image", "image_url": p["image_url"]["url"], "detail": "auto"}
                if p["type"] == "image_url"
                else {"type": "input_text", "text": p.get("text") or f"[{p['type']}]"}
                for p in content
            ]
        if content:
            items.append({"role": chat["role"], "content": content})
        for call in chat.get("tool_calls") or ():
            function = call["function"]
            items.append(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": function["name"],
                    "arguments": function["arguments"],
                }
            )
    return items


async def ask_langchain(model: str | None, system: list[str], inputs: list[Message]) -> str:
    from chatmemory_langchain import from_stored
    from langchain.chat_models import init_chat_model
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
    from langchain_core.runnables import RunnableLambda

    def fake(messages: list[BaseMessage]) -> AIMessage:
        users = [m.text for m in messages if isinstance(m, HumanMessage)]
        count = sum(not isinstance(m, SystemMessage) for m in messages)
        return AIMessage(echo(count, users[-1] if users else ""))

    messages: list[BaseMessage] = [SystemMessage("\n\n".join(system))] if system else []
    messages += [from_stored(m) for m in inputs]  # LangChain's own message when it recorded it
    llm: Any = init_chat_model(model) if model else RunnableLambda(fake)
    reply: AIMessage = await llm.ainvoke(messages)
    calls = [f"→ {c['name']}({c['args']})" for c in reply.tool_calls]
    return " ".join([reply.text, *calls])


FRAMEWORKS: dict[str, Ask] = {
    "pydantic-ai": ask_pydantic_ai,
    "openai-agents": ask_openai_agents,
    "langchain": ask_langchain,
}


# -- the replay itself: framework-neutral --------------------------------------------------------


def pick(histories: Sequence[HistoryDetail], number: int | None) -> tuple[int, HistoryDetail]:
    """The run numbered ``number`` (from 1), else the last one with an assistant answer."""
    if number is not None:
        if not 1 <= number <= len(histories):
            raise SystemExit(f"--history must be between 1 and {len(histories)}")
        return number, histories[number - 1]
    for index in range(len(histories), 0, -1):
        if answers(histories[index - 1]):
            return index, histories[index - 1]
    raise SystemExit("no run in this conversation has an assistant answer to replay")


def answers(history: HistoryDetail) -> list[Message]:
    """The run's complete assistant messages: the turns to replay."""
    return [m for m in history.messages or () if m.role == "assistant" and m.status == "complete"]


async def replay(
    chat: Scope, conversation_id: str, number: int | None, framework: str, model: str | None
) -> None:
    """Print the conversation, then replay run ``number`` through ``framework`` and ``model``."""
    detail = await chat.get_conversation(conversation_id, messages=True)
    print_conversation(detail)
    index, history = pick(detail.histories, number)
    transcript = [m for m in await chat.transcript(conversation_id) if m.status == "complete"]
    ask = FRAMEWORKS[framework]
    print(f"\nReplaying run {index} (model={history.model}) with {framework}, model={model or FAKE}")
    if not answers(history):
        print(f"run {index} has no complete assistant answer to replay")
    for turn, stored in enumerate(answers(history), 1):
        inputs = [m for m in transcript if m.seq < stored.seq]
        new = await ask(model, history.system_prompts or [], inputs)
        last = inputs[-1] if inputs else None
        after = f"after #{last.seq} {last.role}" if last else "with no input"
        print(f"turn {turn}  ({len(inputs)} messages in, {after})")
        print(f"  stored  {stored.model or history.model:<20} {describe(stored)}")
        print(f"  new     {model or FAKE:<20} {textwrap.shorten(new or '(empty)', 100, placeholder=' …')}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("conversation_id")
    parser.add_argument(
        "--history", type=int, metavar="N", help="the run to replay, from 1 (default: the last)"
    )
    parser.add_argument("--with", dest="framework", choices=list(FRAMEWORKS), default="pydantic-ai")
    parser.add_argument("--model", help=f"a model name the framework knows (default: the offline {FAKE!r})")
    parser.add_argument("--url", default=os.environ.get("CHATMEMORY_URL"), help="database URL")
    parser.add_argument("--as", dest="principal", default=os.environ.get("CHATMEMORY_PRINCIPAL", "alice"))
    parser.add_argument("--tenant", help="the principal's tenant")
    parser.add_argument("--admin", action="store_true", help="act as an admin of the tenant")
    args = parser.parse_args()
    model = None if args.model in (None, FAKE) else args.model

    async with ChatMemory.open(args.url) as memory:
        chat = memory.scoped(Principal(args.principal, tenant=args.tenant, admin=args.admin))
        try:
            await replay(chat, args.conversation_id, args.history, args.framework, model)
        except ChatMemoryError as exc:  # e.g. not found: a conversation of someone else looks missing
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
