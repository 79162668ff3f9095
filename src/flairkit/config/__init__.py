"""Validated configuration: the schema, named presets and YAML loading with dotted overrides."""

from flairkit.config.loading import (
    config_from_dict,
    config_to_yaml,
    load_config,
    parse_override,
    preset_dict,
    preset_names,
    save_resolved_config,
)
from flairkit.config.schema import FlairConfig

__all__ = [
    "FlairConfig",
    "config_from_dict",
    "config_to_yaml",
    "load_config",
    "parse_override",
    "preset_dict",
    "preset_names",
    "save_resolved_config",
]
