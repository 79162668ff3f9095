"""Confusion matrices from prediction rasters on disk and their ground-truth masks.

Predictions are named as IGN's FLAIR code writes them: ``PRED_<image basename>.tif`` (e.g.
``PRED_IMG_000826.tif`` for ``IMG_000826.tif``, whose mask is ``MSK_000826.tif``), one band of 0-based
target indices. Masks hold FLAIR class codes and are mapped with the nomenclature.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from flairkit.data.rasters import read_raster
from flairkit.errors import DataError
from flairkit.evaluation.confusion import ConfusionAccumulator
from flairkit.nomenclature import INVALID_TARGET, Nomenclature

MASK_NAME = re.compile(r"^MSK_(?P<id>.+)\.tif$", re.IGNORECASE)
MAX_LISTED = 10


def prediction_name(mask: Path) -> str:
    """The prediction file name expected for a mask: ``MSK_000826.tif`` -> ``PRED_IMG_000826.tif``."""
    match = MASK_NAME.match(Path(mask).name)
    if match is None:
        raise DataError(f"{mask}: a FLAIR mask file is named MSK_<id>.tif; rename it or list the right masks")
    return f"PRED_IMG_{match['id']}.tif"


def _listing(items: Sequence[object]) -> str:
    shown = ", ".join(str(item) for item in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def pair_predictions(pred_dir: Path, masks: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Match each mask ``MSK_<id>.tif`` with ``PRED_IMG_<id>.tif`` found anywhere under ``pred_dir``.

    Returns (prediction, mask) pairs in the order of ``masks``. Raises DataError listing the masks
    without a prediction, or naming predictions found twice.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"prediction folder {pred_dir} does not exist; run `flair predict` first or fix the path")
    found: dict[str, Path] = {}
    for path in sorted(pred_dir.rglob("PRED_*")):
        if path.suffix.lower() != ".tif" or not path.is_file():
            continue
        key = path.name.upper()
        if key in found:
            raise DataError(
                f"prediction {path.name} found twice ({found[key]} and {path}); keep one prediction per image"
            )
        found[key] = path
    pairs: list[tuple[Path, Path]] = []
    missing: list[str] = []
    for mask in masks:
        name = prediction_name(mask)
        prediction = found.get(name.upper())
        if prediction is None:
            missing.append(name)
        else:
            pairs.append((prediction, Path(mask)))
    if missing:
        raise DataError(
            f"{len(missing)} of {len(masks)} predictions are missing from {pred_dir}: {_listing(missing)}; "
            f"predict every test image (flair predict) before computing metrics"
        )
    return pairs


def confusion_from_files(
    pairs: Sequence[tuple[Path, Path]],
    nomenclature: Nomenclature,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Sum the int64 confusion matrix (rows = truth) of (prediction, mask) raster pairs.

    Mask values outside every class of the nomenclature are ignored; a prediction value that is not a
    target index, or a prediction and mask of different sizes, is a DataError naming the files. ``progress`` is
    called with (pairs read, pairs) after each pair.
    """
    if not pairs:
        raise DataError("no (prediction, mask) pair to evaluate; check the test list and the prediction folder")
    n_classes = nomenclature.n_targets
    accumulator = ConfusionAccumulator(n_classes, INVALID_TARGET)
    for done, (prediction_path, mask_path) in enumerate(pairs, start=1):
        prediction = read_raster(prediction_path, bands=[1])[0]
        mask = read_raster(mask_path, bands=[1])[0]
        if mask.dtype != np.uint8:
            # Mapping casts to uint8: a uint16 value 257 would silently count as class 1.
            raise DataError(
                f"mask {mask_path} holds {mask.dtype} values, FLAIR masks are uint8 class codes (1..19); "
                "convert it (e.g. gdal_translate -ot Byte)"
            )
        if prediction.shape != mask.shape:
            raise DataError(
                f"prediction {prediction_path} is {prediction.shape[1]}x{prediction.shape[0]} px but mask "
                f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} px; predict at the mask's size"
            )
        low, high = (int(prediction.min()), int(prediction.max())) if prediction.size else (0, 0)
        if low < 0 or high >= n_classes:
            raise DataError(
                f"prediction {prediction_path} holds class indices {low}..{high} but nomenclature "
                f"{nomenclature.name!r} has {n_classes} targets (0..{n_classes - 1}); predictions must be "
                f"0-based target indices written with the same nomenclature"
            )
        accumulator.update(prediction, nomenclature.map_mask(mask))
        if progress is not None:
            progress(done, len(pairs))
    return accumulator.matrix
