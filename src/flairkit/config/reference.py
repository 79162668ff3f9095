"""The config reference: every key with its default and description, from the schema itself."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from flairkit.config.schema import FlairConfig


def _section_type(annotation: object) -> type[BaseModel] | None:
    candidates = [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        candidates = list(typing.get_args(annotation))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def iter_keys(model: type[BaseModel] = FlairConfig, prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf key of the config (dotted) with its field."""
    for name, field in model.model_fields.items():
        section = _section_type(field.annotation)
        if section is not None and field.default is not None:
            yield from iter_keys(section, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        value = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    return json.dumps(value, default=str)


def reference_markdown() -> str:
    """A markdown table of every config key: key, default, description."""
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, field in iter_keys():
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        lines.append(f"| `{key}` | `{_default(field)}` | {description} |")
    return "\n".join(lines)
