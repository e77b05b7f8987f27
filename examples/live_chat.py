"""A chat app's reply arriving live: stored as a pending placeholder, completed by a background
worker, and pushed to two watchers as each change commits: one in process (``scope.watch``) and
one over HTTP (Server-Sent Events from ``chatmemory-server``, read with httpx).

Runs offline: the server listens on a free loopback port, the "model" is a few lines of Python.
"""

import argparse
import asyncio
import json
import socket
import tempfile
from pathlib import Path

import httpx
import uvicorn
from chatmemory_server import TokenFile, TokenFileVerifier, create_app
from httpx_sse import aconnect_sse

from chatmemory import ChangeEvent, ChatMemory, Principal, Scope

QUESTION = "What should I pack for Oslo in March?"


def describe(event: ChangeEvent) -> str:
    message = event.message
    if message is None:
        return event.kind
    text = repr(message.content) if message.status == "complete" else f"({message.status})"
    return f"{event.kind:<17} seq={message.seq} {message.role:<9} {text}"


async def watch_in_process(chat: Scope, conversation_id: str, cursor: str) -> None:
    """What a worker or another part of the app sees: ``scope.watch`` from a cursor."""
    async for event in chat.watch(conversation_id, after=cursor):
        print(f"watch  {describe(event)}")
        if event.kind == "message.completed":
            return


async def watch_over_http(http: httpx.AsyncClient, conversation_id: str, subscribed: asyncio.Event) -> None:
    """What a browser sees: the conversation's event stream."""
    async with aconnect_sse(http, "GET", f"/v1/conversations/{conversation_id}/events") as source:
        async for sse in source.aiter_sse():
            if sse.event == "ready":  # the stream starts here: nothing after this is missed
                subscribed.set()
                continue
            event = ChangeEvent.model_validate(json.loads(sse.data))
            print(f"sse    {describe(event)}")
            if event.kind == "message.completed":
                return


async def generate_reply(chat: Scope, message_id: str) -> None:
    """The background worker: produce the answer, then fill in the placeholder."""
    await asyncio.sleep(0.2)  # the model thinking
    await chat.complete_message(message_id, content="Warm layers, waterproof boots and a hat.")
    print("worker completed the placeholder")


async def main(url: str | None) -> None:
    async with ChatMemory.open(url) as memory:
        with tempfile.TemporaryDirectory() as config:
            tokens = TokenFile(Path(config) / "tokens.json")
            token, _ = tokens.create(Principal("alice"))
            app = create_app(memory, verifier=TokenFileVerifier(tokens.path))
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen()  # connections wait in the backlog until the server accepts them
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
            serving = asyncio.create_task(server.serve([sock]))
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            try:
                headers = {"Authorization": f"Bearer {token}"}
                async with (
                    httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http,
                    asyncio.timeout(20),
                ):
                    await chat_turn(memory.scoped(Principal("alice")), http)
            finally:
                server.should_exit = True
                await serving


async def chat_turn(chat: Scope, http: httpx.AsyncClient) -> None:
    conv = (await http.post("/v1/conversations", json={"title": "Packing"})).json()
    run = (await http.post(f"/v1/conversations/{conv['id']}/histories", json={"model": "gpt-4.1"})).json()

    cursor = await chat.change_cursor(conv["id"])
    subscribed = asyncio.Event()
    watchers = [
        asyncio.create_task(watch_in_process(chat, conv["id"], cursor)),
        asyncio.create_task(watch_over_http(http, conv["id"], subscribed)),
    ]
    await subscribed.wait()

    # The user sends a message; the app stores it with a placeholder for the answer, in one call.
    sent = await http.post(
        f"/v1/histories/{run['id']}/messages",
        json={
            "messages": [
                {"role": "user", "content": QUESTION, "key": "turn-1-user"},
                {"role": "assistant", "content": "", "status": "pending", "key": "turn-1-reply"},
            ]
        },
    )
    user, placeholder = sent.json()["messages"]
    print(f"stored the user message (seq {user['seq']}) and a pending placeholder (seq {placeholder['seq']})")
    worker = asyncio.create_task(generate_reply(chat, placeholder["id"]))
    await asyncio.gather(worker, *watchers)

    reply = (await http.get(f"/v1/messages/{placeholder['id']}")).json()
    print(f"answer: {reply['content']} (model {reply['model']}, {reply['status']})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: $CHATMEMORY_URL, else the user data directory)")
    asyncio.run(main(parser.parse_args().url))
