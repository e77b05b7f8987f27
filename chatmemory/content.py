"""Content parts: the neutral, multimodal form of a message's content."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError, model_validator

from chatmemory._validation import invalid_input
from chatmemory.errors import InvalidInputError

__all__ = [
    "AudioPart",
    "ContentPart",
    "FilePart",
    "ImagePart",
    "ReasoningPart",
    "TextPart",
    "ToolCallPart",
    "ToolResultPart",
    "flatten_content",
]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextPart(_Part):
    """Plain text."""

    type: Literal["text"] = "text"
    text: str


class _MediaPart(_Part):
    """Binary content, either by ``url`` or inline as base64 ``data`` with its ``media_type``."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.url is None) == (self.data is None):
            raise ValueError("give exactly one of url or data")
        if self.data is not None:
            if not self.media_type:
                raise ValueError("inline data needs a media_type")
            try:
                base64.b64decode(self.data, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("data must be base64") from None
        return self

    @property
    def data_size(self) -> int:
        """Decoded size in bytes of the inline data (0 when given by url)."""
        if self.data is None:
            return 0
        return len(self.data) * 3 // 4 - self.data[-2:].count("=")


def inline_size(part: ContentPart) -> int:
    """Decoded size in bytes of a part's inline data (0 for a part without any)."""
    # ``isinstance``, not ``getattr`` with a default: on a model without the attribute that
    # raises inside pydantic, ten times the cost, and appends ask it of every part.
    return part.data_size if isinstance(part, _MediaPart) else 0


class ImagePart(_MediaPart):
    """An image."""

    type: Literal["image"] = "image"


class AudioPart(_MediaPart):
    """An audio clip."""

    type: Literal["audio"] = "audio"


class FilePart(_MediaPart):
    """A file, optionally with its name."""

    type: Literal["file"] = "file"
    filename: str | None = None


class ToolCallPart(_Part):
    """A model's request to call a tool; ``arguments`` as the model sent them (JSON text or object)."""

    type: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: str | dict[str, JsonValue] = Field(default_factory=dict)

    def arguments_object(self) -> dict[str, JsonValue] | None:
        """The arguments as a JSON object (JSON text read, empty text as ``{}``), or ``None``
        when they are text that is not one."""
        if isinstance(self.arguments, dict):
            return dict(self.arguments)
        try:
            parsed = json.loads(self.arguments) if self.arguments.strip() else {}
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None


class ToolResultPart(_Part):
    """What a tool returned for the call with id ``call_id``."""

    type: Literal["tool_result"] = "tool_result"
    call_id: str
    content: str
    is_error: bool = False


class ReasoningPart(_Part):
    """A model's reasoning text."""

    type: Literal["reasoning"] = "reasoning"
    text: str


ContentPart: TypeAlias = Annotated[
    TextPart | ImagePart | AudioPart | FilePart | ToolCallPart | ToolResultPart | ReasoningPart,
    Field(discriminator="type"),
]
"""Any content part, discriminated by its ``type``."""

PARTS: TypeAdapter[list[ContentPart]] = TypeAdapter(list[ContentPart])


def parse_parts(parts: object, field: str = "content") -> list[ContentPart]:
    """Validate a list of parts (models or dicts).

    Raises:
        InvalidInputError: it is not a list of well-formed parts.
    """
    if isinstance(parts, str | bytes) or not isinstance(parts, Sequence):
        raise InvalidInputError(field, "must be a string or a list of content parts")
    try:
        return PARTS.validate_python(list(parts))
    except ValidationError as exc:
        raise invalid_input(exc, field) from None


def flatten_content(content: str | Sequence[ContentPart | Mapping[str, Any]]) -> str:
    """The plain text of ``content``: a string as is, else the text of its ``text`` and
    ``tool_result`` parts joined with ``"\\n"``.

    Raises:
        InvalidInputError: a part is malformed.
    """
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in parse_parts(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ToolResultPart):
            texts.append(part.content)
    return "\n".join(texts)
