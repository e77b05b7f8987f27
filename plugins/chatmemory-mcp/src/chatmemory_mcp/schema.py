"""What ``tools/list`` shows, kept small: every client pays for it in its context on every turn.

pydantic's JSON schemas repeat a ``title`` on every node, spell ``X | None`` as an ``anyOf``
and leave ``JsonValue`` as the empty schema ``{}``. ``compact_schema`` rewrites them into
the equivalent, shorter form; output schemas also lose their descriptions (the tool
description says what comes back, and the structured result is validated either way).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo

__all__ = ["JSON_VALUE_SCHEMA", "ToolSpec", "compact_schema", "expectation"]

JSON_VALUE_SCHEMA: dict[str, Any] = {
    "type": ["object", "array", "string", "number", "boolean", "null"],
    "description": "Any JSON value.",
}
_NAMED_SCHEMAS = ("properties", "$defs", "patternProperties")


def compact_schema(schema: Mapping[str, Any], *, output: bool = False) -> dict[str, Any]:
    """An equivalent, shorter ``schema``: no titles or null defaults, ``["T", "null"]`` types,
    one-line descriptions, objects of any JSON values as plain ``{"type": "object"}``.

    With ``output=True`` (a result schema) descriptions and defaults go too, and nothing is
    nullable: results never carry null fields.
    """
    out: dict[str, Any] = _compact(schema, output)
    defs = out.get("$defs")
    if isinstance(defs, dict) and "JsonValue" in defs:
        if _refers(out, _JSON_REF):
            defs["JsonValue"] = dict(JSON_VALUE_SCHEMA)
        else:
            del defs["JsonValue"]
        if not defs:
            del out["$defs"]
    return out


_JSON_REF = "#/$defs/JsonValue"


def _compact(node: Any, output: bool) -> Any:
    if isinstance(node, list):
        return [_compact(item, output) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "description" and isinstance(value, str):
            if not output:
                out[key] = " ".join(value.split())
            continue
        if (key == "default" and (value is None or output)) or (key == "format" and output):
            continue
        if key == "additionalProperties" and value == {"$ref": _JSON_REF}:
            continue  # any JSON value is what an object's values are anyway
        if key in _NAMED_SCHEMAS and isinstance(value, Mapping):
            out[key] = {name: _compact(sub, output) for name, sub in value.items()}
        else:
            out[key] = _compact(value, output)
    out = _nullable(out)
    # Null means "left out" in a result, and in an argument whose default is null.
    optional = output or ("default" in node and node["default"] is None)
    if optional and isinstance(out.get("type"), list) and "null" in out["type"] and len(out["type"]) == 2:
        out["type"] = next(t for t in out["type"] if t != "null")
    return out


def _refers(node: Any, ref: str) -> bool:
    if isinstance(node, Mapping):
        return node.get("$ref") == ref or any(_refers(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_refers(v, ref) for v in node)
    return False


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """``{"anyOf": [{"type": "T", ...}, {"type": "null"}]}`` as ``{"type": ["T", "null"], ...}``."""
    options = node.get("anyOf")
    if not isinstance(options, list) or len(options) != 2 or {"type": "null"} not in options:
        return node
    (other,) = [o for o in options if o != {"type": "null"}]
    if not isinstance(other.get("type"), str) or set(other) & set(node) - {"anyOf"}:
        return node
    merged = {k: v for k, v in node.items() if k != "anyOf"}
    merged.update(other)
    merged["type"] = [other["type"], "null"]
    return merged


def expectation(schema: Mapping[str, Any] | None) -> str:
    """What to send for an argument, in words, from its JSON schema (``""`` when unknown)."""
    if not schema:
        return ""
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"] if v is not None)
    if "const" in schema:
        return repr(schema["const"])
    kinds = schema.get("type")
    kind = next((k for k in kinds if k != "null"), None) if isinstance(kinds, list) else kinds
    bounds = []
    if "minimum" in schema and "maximum" in schema:
        bounds.append(f"from {schema['minimum']} to {schema['maximum']}")
    elif "maximum" in schema:
        bounds.append(f"no larger than {schema['maximum']}")
    elif "minimum" in schema:
        bounds.append(f"no smaller than {schema['minimum']}")
    if "maxLength" in schema:
        low = schema.get("minLength", 0)
        bounds.append(f"of {low} to {schema['maxLength']} characters")
    if "maxItems" in schema:
        low = schema.get("minItems", 0)
        bounds.append(f"of {low} to {schema['maxItems']} items")
    words = {
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "boolean": "true or false",
        "object": "a JSON object",
        "array": "a list",
    }
    text = words.get(str(kind), "") if kind else ""
    if not text and "anyOf" in schema:
        text = " or ".join(filter(None, (expectation(o) for o in schema["anyOf"] if o != {"type": "null"})))
    return " ".join(filter(None, [text, " ".join(bounds)])).strip()


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the server needs to know of a tool beyond its schema.

    Attributes:
        names: every argument name accepted (canonical and alias) to its canonical name.
        output: the model the tool returns.
    """

    names: dict[str, str]
    output: type[BaseModel] | None

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> ToolSpec:
        """The spec of a tool function: its parameters' aliases and its return model."""
        hints = typing.get_type_hints(fn, include_extras=True)
        names: dict[str, str] = {}
        for name, parameter in inspect.signature(fn).parameters.items():
            hint = hints.get(name, parameter.annotation)
            if name == "ctx" or hint is inspect.Parameter.empty:
                continue
            names[name] = name
            for meta in typing.get_args(hint)[1:] if typing.get_origin(hint) is typing.Annotated else ():
                if isinstance(meta, FieldInfo) and isinstance(meta.validation_alias, AliasChoices):
                    for alias in meta.validation_alias.choices:
                        if isinstance(alias, str):
                            names[alias] = name
        output = hints.get("return")
        is_model = isinstance(output, type) and issubclass(output, BaseModel)
        return cls(names=names, output=output if is_model else None)
