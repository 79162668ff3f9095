"""Which weights and settings made a folder of predictions, and which files in it can be kept.

``manifest.json`` in a predictions folder records the weights (path, sha256 of the file, fingerprint of the
network) and the settings that change predictions. A run refuses to add predictions to a folder made by other
weights or settings, and keeps an existing ``PRED_*.tif`` only when it opens as a complete prediction of its
patch; anything else is computed again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from torch import nn

from flairkit.atomic import check_not_inputs, write_text_atomic
from flairkit.config.schema import FlairConfig
from flairkit.data.discovery import PatchRecord
from flairkit.errors import DataError
from flairkit.hashing import file_sha256

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SETTINGS = (
    ("data", "channels"),
    ("data", "nomenclature"),
    ("data", "normalization"),
    ("data", "metadata"),
    ("data", "metadata_encoding"),
    ("data", "sentinel"),
    ("model", "arch"),
    ("model", "encoder"),
    ("model", "smp_kwargs"),
    ("model", "multimodal"),
    ("model", "utae"),
    ("model", "fusion"),
    ("evaluate", "tta"),
)
"""Config keys that change what a network predicts."""


def weights_file(weights: Path | str | None) -> Path | None:
    """The file read for ``weights`` (a file, a bundle folder or a released model name); None when not given."""
    if weights is None:
        return None
    from flairkit.models.weights import resolve_source

    return resolve_source(weights).path.resolve()


def weights_files(weights: Path | str | Sequence[Path | str] | None) -> list[Path]:
    """The files read for ``weights`` (one source or the sources of an ensemble, see :func:`weights_file`)."""
    if weights is None:
        return []
    sources = [weights] if isinstance(weights, Path | str) else list(weights)
    return [path for path in map(weights_file, sources) if path is not None]


def prediction_manifest(
    config: FlairConfig, models: Sequence[nn.Module], weights: Sequence[Path], passes: str
) -> dict[str, Any]:
    """The manifest of predictions made by ``models`` (one, or an ensemble, loaded from the files ``weights`` when
    known) with ``config``; ``passes``: the forward passes per patch (recorded, e.g. "tta d4 x 2 models = 16
    passes")."""
    from flairkit.models.loader import weights_fingerprint

    data = config.model_dump(mode="json")
    known = len(weights) == len(models)
    return {
        "weights": ", ".join(map(str, weights)) if known else None,
        "weights_sha256": ", ".join(file_sha256(path) for path in weights) if known else None,
        "model": "+".join(weights_fingerprint(model) for model in models),
        "passes": passes,
        "settings": {f"{section}.{key}": data[section][key] for section, key in SETTINGS},
    }


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path`` (None when absent); a file there that is not one is never replaced."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read it ({error}); fix it or predict into another folder") from None
    try:
        manifest = json.loads(text)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or "model" not in manifest:
        raise DataError(f"{path} is not a manifest of flairkit predictions; predict into another folder")
    return manifest


def _weights(manifest: dict[str, Any]) -> str:
    """The weights a manifest names: their file and sha256, or the fingerprint of the network."""
    if manifest.get("weights"):
        return f"{manifest['weights']} (sha256 {str(manifest.get('weights_sha256'))[:12]}...)"
    return f"a network given in memory (fingerprint {str(manifest.get('model'))[:12]}...)"


def claim_folder(out_dir: Path, manifest: dict[str, Any], *, overwrite: bool, has_predictions: bool) -> None:
    """Refuse to add to ``out_dir`` predictions of other weights or settings (unless ``overwrite``), then record
    ``manifest`` there. ``has_predictions``: the folder already holds predictions of this run's patches."""
    path = Path(out_dir) / MANIFEST
    previous = _read_manifest(path)
    fix = "pass --overwrite to predict them again or choose another folder"
    if previous is None and has_predictions:
        raise DataError(f"{out_dir} already holds predictions but no {MANIFEST} saying which weights made them; {fix}")
    if previous is not None and not overwrite:
        if previous.get("model") != manifest["model"]:
            raise DataError(
                f"{out_dir} holds predictions made by {_weights(previous)}, not by {_weights(manifest)}; {fix}"
            )
        # Folders predicted before test-time augmentation existed were predicted without it.
        settings = {"evaluate.tta": "none", **previous.get("settings", {})}
        changed = [key for key, value in manifest["settings"].items() if settings.get(key) != value]
        if changed:
            differences = ", ".join(
                f"{key}={settings.get(key)} (this run: {manifest['settings'][key]})" for key in changed
            )
            raise DataError(f"{out_dir} holds predictions made with {differences}; {fix}")
    write_text_atomic(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def kept_prediction(path: Path, image: Path, n_targets: int) -> np.ndarray | None:
    """The classes of the existing prediction ``path`` of ``image``; None when it is not a complete one."""
    try:
        with rasterio.open(image) as src:
            expected = (1, "uint8", src.height, src.width)
        with rasterio.open(path) as src:
            layout = (src.count, src.dtypes[0], src.height, src.width)
            classes = src.read(1) if layout == expected else None
    except RasterioError:
        classes = None
    if classes is None or classes.max(initial=0) >= n_targets:
        logger.warning("%s is not a complete prediction of %s: predicting it again", path, image)
        return None
    return classes


def check_prediction_paths(
    records: Sequence[PatchRecord], predictions: Sequence[Path], outputs: Iterable[Path], inputs: Iterable[Path]
) -> None:
    """Refuse two patches predicted into one file, and outputs that are input files (patches, masks, ``inputs``).

    ``predictions`` are the prediction paths of ``records``; ``outputs`` the other files the run writes.
    """
    seen: dict[Path, Path] = {}
    for record, path in zip(records, predictions, strict=True):
        if path in seen:
            raise DataError(
                f"{seen[path]} and {record.image} would both be predicted into {path}; give the patches distinct "
                f"file names or predict them into different folders"
            )
        seen[path] = record.image
    patches = [file for record in records for file in (record.image, record.mask) if file is not None]
    check_not_inputs([*predictions, *outputs], [*patches, *inputs])
