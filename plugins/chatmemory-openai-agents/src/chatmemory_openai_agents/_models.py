"""Which model serves an agent, by the same precedence the Agents SDK uses."""

from __future__ import annotations

from typing import Any

from agents import Agent, RunConfig
from agents.models import get_default_model

__all__ = ["resolve_model_name"]


def resolve_model_name(agent: Agent[Any], run_config: RunConfig | None = None) -> str:
    """The name of the model that serves ``agent``'s calls in a run with ``run_config``.

    The run config's model wins over the agent's; with neither, the SDK's default model
    (``OPENAI_DEFAULT_MODEL``) serves. A ``Model`` object is named by its ``model``
    attribute, which the SDK's own models carry, else by its class name.
    """
    chosen = run_config.model if run_config is not None and run_config.model is not None else agent.model
    if chosen is None:
        return get_default_model()
    if isinstance(chosen, str):
        return chosen or get_default_model()
    name = getattr(chosen, "model", None)
    return name if isinstance(name, str) and name else type(chosen).__name__
