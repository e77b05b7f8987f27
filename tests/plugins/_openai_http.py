"""An in-process OpenAI API: the real SDK clients talk to it through ``httpx.MockTransport``.

Its bodies have the shape the Responses and Chat Completions APIs return (reasoning items,
annotated text, tool calls, cached and reasoning token counts), plain or streamed (SSE), so
the frameworks' own provider models parse them as they parse the real ones. Each request's
JSON body is kept, to compare what two runs sent.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai

CREATED = 1_764_650_000
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):024x}"


def reset_ids() -> None:
    """Number the ids of the bodies built next from 1 again: two runs scripted alike get the same ids."""
    global _ids
    _ids = itertools.count(1)


# -- Responses API items -----------------------------------------------------------------------


def reasoning(summary: str = "The user wants a sum; the add tool gives it.") -> dict[str, Any]:
    return {
        "id": _id("rs"),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": summary}],
        "encrypted_content": "gAAAAABpRk-encrypted-reasoning-state==",
    }


def function_call(name: str, arguments: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    return {
        "id": _id("fc"),
        "type": "function_call",
        "status": "completed",
        "arguments": json.dumps(arguments),
        "call_id": call_id or _id("call"),
        "name": name,
    }


def message(text: str) -> dict[str, Any]:
    return {
        "id": _id("msg"),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [
            {
                "type": "output_text",
                "annotations": [
                    {
                        "type": "url_citation",
                        "start_index": 0,
                        "end_index": min(len(text), 4),
                        "url": "https://example.com/sums",
                        "title": "Sums",
                    }
                ],
                "logprobs": [],
                "text": text,
            }
        ],
    }


def responses_usage(input_tokens: int = 320, output_tokens: int = 210) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 256},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 192},
        "total_tokens": input_tokens + output_tokens,
    }


def response(output: list[dict[str, Any]], model: str, *, status: str = "completed") -> dict[str, Any]:
    return {
        "id": _id("resp"),
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "billing": {"payer": "developer"},
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "safety_identifier": None,
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": responses_usage() if status == "completed" else None,
        "user": None,
        "metadata": {},
    }


def _response_events(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    start = {**body, "status": "in_progress", "output": [], "usage": None}
    yield {"type": "response.created", "response": start}
    yield {"type": "response.in_progress", "response": start}
    for index, item in enumerate(body["output"]):
        kind = item["type"]
        if kind == "message":
            yield {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**item, "status": "in_progress", "content": []},
            }
            for c, part in enumerate(item["content"]):
                empty = {**part, "text": "", "annotations": []}
                common = {"item_id": item["id"], "output_index": index, "content_index": c}
                yield {"type": "response.content_part.added", **common, "part": empty}
                text = part["text"]
                for chunk in (text[: len(text) // 2], text[len(text) // 2 :]):
                    yield {"type": "response.output_text.delta", **common, "delta": chunk, "logprobs": []}
                for a, annotation in enumerate(part["annotations"]):
                    yield {
                        "type": "response.output_text.annotation.added",
                        **common,
                        "annotation_index": a,
                        "annotation": annotation,
                    }
                yield {"type": "response.output_text.done", **common, "text": text, "logprobs": []}
                yield {"type": "response.content_part.done", **common, "part": part}
        elif kind == "function_call":
            yield {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**item, "status": "in_progress", "arguments": ""},
            }
            common = {"item_id": item["id"], "output_index": index}
            yield {"type": "response.function_call_arguments.delta", **common, "delta": item["arguments"]}
            yield {"type": "response.function_call_arguments.done", **common, "arguments": item["arguments"]}
        elif kind == "reasoning":
            yield {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**item, "summary": [], "encrypted_content": None},
            }
            for s, part in enumerate(item["summary"]):
                common = {"item_id": item["id"], "output_index": index, "summary_index": s}
                yield {
                    "type": "response.reasoning_summary_part.added",
                    **common,
                    "part": {"type": "summary_text", "text": ""},
                }
                yield {"type": "response.reasoning_summary_text.delta", **common, "delta": part["text"]}
                yield {"type": "response.reasoning_summary_text.done", **common, "text": part["text"]}
                yield {"type": "response.reasoning_summary_part.done", **common, "part": part}
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
    yield {"type": "response.completed", "response": body}


# -- Chat Completions API ----------------------------------------------------------------------


def chat_tool_call(name: str, arguments: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    return {
        "id": call_id or _id("call"),
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def chat_completion(
    model: str,
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    *,
    refusal: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
    if tool_calls:
        message["tool_calls"] = tool_calls
    logprobs = None
    if content:
        logprobs = {
            "content": [
                {"token": word, "logprob": -0.01, "bytes": list(word.encode()), "top_logprobs": []}
                for word in content.split(" ")
            ],
            "refusal": None,
        }
    finish = "tool_calls" if tool_calls else "stop"
    return {
        "id": _id("chatcmpl"),
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 310,
            "completion_tokens": 42,
            "total_tokens": 352,
            "prompt_tokens_details": {"cached_tokens": 256, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 16,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_7f0a1b2c3d",
    }


def _chat_chunks(body: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    head = {k: body[k] for k in ("id", "created", "model", "service_tier", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    choice = body["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **({"usage": None} if include_usage else {}),
        }

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    text = message.get("content") or ""
    for part in (text[: len(text) // 2], text[len(text) // 2 :]):
        if part:
            yield chunk({"content": part})
    for i, call in enumerate(message.get("tool_calls") or ()):
        first = {
            "index": i,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        yield chunk({"tool_calls": [first]})
        yield chunk({"tool_calls": [{"index": i, "function": {"arguments": call["function"]["arguments"]}}]})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield {**head, "choices": [], "usage": body["usage"]}


# -- the server --------------------------------------------------------------------------------


class FakeOpenAI:
    """Answers each request with the next scripted body (a Responses or Chat Completions one)."""

    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.bodies = list(bodies)
        self.requests: list[dict[str, Any]] = []

    def script(self, *bodies: dict[str, Any]) -> None:
        self.bodies.extend(bodies)

    def handler(self, request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        self.requests.append(sent)
        if not self.bodies:
            return httpx.Response(
                500, json={"error": {"message": "no scripted answer", "type": "server_error"}}
            )
        body = self.bodies.pop(0)
        if not sent.get("stream"):
            return httpx.Response(200, json=body)
        if body.get("object") == "response":
            events = [{**e, "sequence_number": n} for n, e in enumerate(_response_events(body))]
            text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
        else:
            include = bool((sent.get("stream_options") or {}).get("include_usage"))
            text = "".join(f"data: {json.dumps(c)}\n\n" for c in _chat_chunks(body, include))
            text += "data: [DONE]\n\n"
        return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})

    def client(self) -> openai.AsyncOpenAI:
        transport = httpx.MockTransport(self.handler)
        return openai.AsyncOpenAI(
            api_key="sk-test-not-used",
            http_client=httpx.AsyncClient(transport=transport),
            max_retries=0,
        )
