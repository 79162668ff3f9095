"""Where weights come from: a file, an exported bundle folder or a released model name, and their config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flairkit.config.schema import FlairConfig
from flairkit.errors import CheckpointError
from flairkit.models.weights.files import read_checkpoint, saved_nomenclature
from flairkit.nomenclature import is_nomenclature_file

BUNDLE_WEIGHTS = "model.safetensors"
BUNDLE_CONFIG = "config.json"
BUNDLE_NOMENCLATURE = "nomenclature.yaml"
"""The text of the nomenclature YAML a bundle was exported with (when it has one): the bundle keeps working
wherever that YAML went."""


@dataclass(frozen=True)
class WeightsSource:
    """Where weights come from: a file, plus the config that goes with them when known."""

    path: Path
    config: FlairConfig | None
    origin: str
    """How the source was named: file, bundle or released model."""


def _bundle_json(folder: Path) -> dict[str, Any]:
    import json

    config_file = folder / BUNDLE_CONFIG
    if not config_file.is_file():
        raise CheckpointError(
            f"{folder} is not a flairkit bundle: {BUNDLE_CONFIG} is missing; export it again with `flair export`"
        )
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {config_file} ({error}); export the bundle again") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{config_file} is not a JSON object of config sections; export the bundle again")
    return data


def _restored_nomenclature(folder: Path, data: Mapping[str, Any]) -> str | None:
    """The bundle's saved nomenclature YAML written back into the cache (as checkpoints do, see
    :func:`~flairkit.models.weights.files.nomenclature_cache`) when the path recorded in ``data`` no longer holds its
    text; None when nothing needs restoring."""
    section = data.get("data")
    recorded = section.get("nomenclature") if isinstance(section, Mapping) else None
    saved = folder / BUNDLE_NOMENCLATURE
    if not isinstance(recorded, str) or not is_nomenclature_file(recorded) or not saved.is_file():
        return None
    text = saved.read_text(encoding="utf-8")
    path = Path(recorded)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return None
    return str(saved_nomenclature(text, path.name))


def read_bundle_config(folder: Path) -> FlairConfig:
    """The config.json of an exported bundle folder, validated (its nomenclature YAML restored if it moved)."""
    from flairkit.config import config_from_dict

    data = _bundle_json(folder)
    restored = _restored_nomenclature(folder, data)
    if restored is not None:
        data = {**data, "data": {**data["data"], "nomenclature": restored}}
    return config_from_dict(data, str(folder / BUNDLE_CONFIG))


ONNX_SUFFIX = ".onnx"
"""ONNX graphs (from ``flair export --onnx``) run with onnxruntime instead of torch."""


def resolve_source(source: Path | str) -> WeightsSource:
    """Resolve a weights file, an exported bundle folder or a released model name."""
    path = Path(source)
    if path.is_dir():
        weights = path / BUNDLE_WEIGHTS
        if not weights.is_file():
            raise CheckpointError(
                f"{path} is a folder without {BUNDLE_WEIGHTS}; give a weights file or a bundle made by `flair export`"
            )
        return WeightsSource(weights, read_bundle_config(path), f"bundle {path}")
    if path.is_file() and path.suffix == ONNX_SUFFIX:
        bundle_config = path.parent / BUNDLE_CONFIG
        config = read_bundle_config(path.parent) if bundle_config.is_file() else None
        return WeightsSource(path, config, f"ONNX graph {path}")
    if path.exists():
        return WeightsSource(path, None, f"file {path}")
    from flairkit.models import zoo

    name = str(source)
    if name in zoo.released_models():
        from flairkit.config import load_config

        return WeightsSource(zoo.resolve_weights(name), load_config(name), f"released model {name}")
    raise CheckpointError(
        f"{source} is neither an existing weights file, a bundle folder nor a released model name; "
        "check the path, or run `flair models` for the released models"
    )


MACHINE_PATHS = (
    ("data", "root"),
    ("data", "train_csv"),
    ("data", "val_csv"),
    ("data", "test_csv"),
    ("train", "resume_from"),
    ("train", "init_weights"),
    ("evaluate", "checkpoint"),
)
"""Config paths that only make sense on the machine where a checkpoint or bundle was made."""
RUN_ONLY_KEYS = (("model", "weights_config_check"),)
"""Config keys of one run that never travel with its weights (a checkpoint or bundle does not relax the check)."""


def without_machine_paths(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of config data with :data:`MACHINE_PATHS` cleared and :data:`RUN_ONLY_KEYS` removed."""
    cleared = {section: dict(values) if isinstance(values, Mapping) else values for section, values in data.items()}
    for section, key in MACHINE_PATHS:
        if isinstance(cleared.get(section), dict) and key in cleared[section]:
            cleared[section][key] = None
    for section, key in RUN_ONLY_KEYS:
        if isinstance(cleared.get(section), dict):
            cleared[section].pop(key, None)
    return cleared


def config_from_checkpoint(path: Path | str, overrides: Sequence[str] = ()) -> FlairConfig | None:
    """The config a flairkit Lightning checkpoint was trained with (machine paths cleared), or None.

    ``overrides`` are dotted ``key=value`` strings applied on top, as on the command line.
    """
    from flairkit.config import config_from_dict, parse_override
    from flairkit.config.loading import deep_merge

    embedded = read_checkpoint(path).config
    if embedded is None:
        return None
    data = without_machine_paths(embedded)
    for override in overrides:
        data = deep_merge(data, parse_override(override))
    return config_from_dict(data, f"config saved in {path}")


def weights_config_source(source: Path | str) -> str | None:
    """The config that comes with weights, as a ``load_config`` source: a bundle's config.json or a preset name.

    None for a plain weights file. Commands use it as the default ``--config`` when the user names a bundle
    or a released model. Nothing is downloaded.
    """
    path = Path(source)
    if path.is_dir():
        return str(path / BUNDLE_CONFIG) if (path / BUNDLE_CONFIG).is_file() else None
    if path.suffix == ONNX_SUFFIX and (path.parent / BUNDLE_CONFIG).is_file():
        return str(path.parent / BUNDLE_CONFIG)
    if path.exists():
        return None
    from flairkit.models import zoo

    return str(source) if str(source) in zoo.released_models() else None


def weights_config_overrides(source: Path | str) -> list[str]:
    """Overrides to load :func:`weights_config_source` with: ``data.nomenclature`` pointing to a bundle's saved
    nomenclature YAML, restored, when the path its config.json records no longer holds that YAML."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent if path.suffix == ONNX_SUFFIX else None
    if folder is None or not (folder / BUNDLE_CONFIG).is_file():
        return []
    restored = _restored_nomenclature(folder, _bundle_json(folder))
    return [] if restored is None else [f"data.nomenclature={restored}"]
