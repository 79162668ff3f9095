"""Build a :class:`FlairConfig` from presets, YAML files and dotted command-line overrides."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flairkit.atomic import write_text_atomic
from flairkit.config.schema import FlairConfig
from flairkit.errors import ConfigError

PRESET_PACKAGE = "flairkit.config.presets"
BASE_KEY = "preset"
"""A YAML file may start from a named preset: ``preset: FLAIR-INC_rgbie_15cl_resnet34-unet``."""


def preset_names() -> list[str]:
    """Names of the presets shipped with flairkit, sorted."""
    files = resources.files(PRESET_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{origin} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a mapping of config sections, not {type(data).__name__}")
    return data


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of a shipped preset, with its own base presets merged in."""
    if name not in preset_names():
        raise ConfigError(
            f"unknown preset {name!r}; run 'flair models' to list the presets, or give the path of a YAML file"
        )
    text = resources.files(PRESET_PACKAGE).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return _resolve_base(_read_yaml(text, f"preset {name}"), seen=(name,))


def _resolve_base(data: dict[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    base_name = data.pop(BASE_KEY, None)
    if base_name is None:
        return data
    if base_name in seen:
        raise ConfigError(f"presets inherit from each other in a loop: {' -> '.join(seen + (base_name,))}")
    if base_name not in preset_names():
        raise ConfigError(f"{BASE_KEY}: unknown preset {base_name!r}; run 'flair models' to list the presets")
    text = resources.files(PRESET_PACKAGE).joinpath(f"{base_name}.yaml").read_text(encoding="utf-8")
    base = _resolve_base(_read_yaml(text, f"preset {base_name}"), seen + (base_name,))
    return deep_merge(base, data)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in, nested mappings merged key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"train.lr=0.01"`` into ``{"train": {"lr": 0.01}}`` (the value is read as YAML)."""
    key, sep, raw_value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.lr=0.01")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError:
        value = raw_value
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _format_validation_error(error: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against 'flair config show' or the README's config reference"
        elif item["type"] == "missing":
            message = "required key is missing"
        value = item.get("input")
        shown = "" if item["type"] == "extra_forbidden" or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {message}{shown}")
    return "\n".join(lines)


def config_from_dict(data: Mapping[str, Any], origin: str = "config") -> FlairConfig:
    """Validate a mapping into a :class:`FlairConfig`, with errors naming each bad key."""
    try:
        return FlairConfig.model_validate(dict(data))
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, origin)) from None


def load_config(source: str | Path | None = None, overrides: Sequence[str] = ()) -> FlairConfig:
    """Build the config of a run.

    ``source`` is a YAML file path or a preset name (``None`` for the defaults); ``overrides`` are
    dotted ``key=value`` strings applied last, e.g. ``["train.lr=0.01", "data.channels=[1,2,3]"]``.
    """
    data: dict[str, Any] = {}
    origin = "defaults"
    if source is not None:
        path = Path(source)
        if path.suffix in {".yaml", ".yml"} or path.exists():
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist; give a YAML file or a preset name")
            data = _resolve_base(_read_yaml(path.read_text(encoding="utf-8"), str(path)))
            origin = str(path)
        else:
            data = preset_dict(str(source))
            origin = f"preset {source}"
    for override in overrides:
        data = deep_merge(data, parse_override(override))
    if overrides:
        origin += " + overrides " + " ".join(overrides)
    return config_from_dict(data, origin)


def config_to_yaml(config: FlairConfig) -> str:
    """The fully resolved config as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_resolved_config(config: FlairConfig, folder: Path, filename: str = "config.yaml") -> Path:
    """Write the fully resolved config next to a run's outputs."""
    # The atomic writer creates the folder, or raises a DataError naming it.
    return write_text_atomic(Path(folder) / filename, config_to_yaml(config))
