"""Offline building blocks: a named scripted model, a tool, and agents built from them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agents import Agent, function_tool
from agents.testing import ScriptedModel
from agents.usage import Usage

USAGE = Usage(requests=1, input_tokens=10, output_tokens=4, total_tokens=14)


class NamedModel(ScriptedModel):
    """The SDK's scripted model with a ``model`` name, as the SDK's own models carry."""

    def __init__(self, model: str, steps: Iterable[Any]) -> None:
        super().__init__(steps, default_usage=USAGE)
        self.model = model


@function_tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def make_agent(name: str, model: NamedModel, instructions: str = "Be brief.", **kwargs: Any) -> Agent[Any]:
    return Agent(name=name, instructions=instructions, model=model, **kwargs)
