"""Which model serves an agent, by the same precedence the Agents SDK uses."""

from __future__ import annotations

from typing import Any

from agents import Agent, Model, RunConfig
from agents.models import get_default_model

from chatmemory.recording import model_label

__all__ = ["configured_model_name", "default_model_name", "resolve_model_name"]


def resolve_model_name(agent: Agent[Any], run_config: RunConfig | None = None) -> str:
    """The name of the model that serves ``agent``'s calls in a run with ``run_config``.

    The run config's model wins over the agent's; with neither, the SDK's default model
    (``OPENAI_DEFAULT_MODEL``) serves. A ``Model`` object is named by its ``model``
    attribute, which the SDK's own models carry, else by its class name. The name is the
    one the store keeps (``model_label``).
    """
    return configured_model_name(run_config) or _name_of(agent.model) or default_model_name()


def default_model_name() -> str:
    """The SDK's default model (``OPENAI_DEFAULT_MODEL``) as the store keeps it (``model_label``)."""
    return model_label(get_default_model()) or get_default_model()


def configured_model_name(run_config: RunConfig | None) -> str | None:
    """The name of the model a run config imposes on every agent, if it names one."""
    return _name_of(run_config.model) if run_config is not None else None


def _name_of(chosen: str | Model | None) -> str | None:
    if chosen is None or isinstance(chosen, str):
        return model_label(chosen)
    name = getattr(chosen, "model", None)
    return (model_label(name) if isinstance(name, str) else None) or type(chosen).__name__
