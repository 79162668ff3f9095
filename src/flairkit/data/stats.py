"""Per-band normalisation statistics of a dataset's patches (``flair data stats``)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import yaml

from flairkit.data.discovery import PatchRecord
from flairkit.data.rasters import read_raster
from flairkit.data.transforms import histogram_quantiles
from flairkit.errors import ConfigError, DataError


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation (over pixels, population) of each selected band."""

    channels: tuple[int, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    patches: int
    pixels: int
    quantiles: tuple[tuple[float, ...], ...] | None = None
    """Per band, the values at evenly spaced quantiles from 0 to 1 (None when not asked for)."""

    def normalization(self) -> dict[str, object]:
        """The ``data.normalization`` section these statistics give (values rounded to 0.01)."""
        return {
            "mode": "custom",
            "means": [round(m, 2) for m in self.means],
            "stds": [round(s, 2) for s in self.stds],
        }

    def to_yaml(self, origin: str) -> str:
        """A config snippet setting ``data.normalization``, with a comment saying where it comes from."""
        header = (
            f"# flair data stats: bands {list(self.channels)} over {self.patches} patches ({self.pixels} pixels) "
            f"of {origin}\n"
        )
        data: dict[str, object] = {"normalization": self.normalization()}
        if self.quantiles is not None:
            data["radiometric"] = {"histogram_reference": [[round(v, 3) for v in band] for band in self.quantiles]}
        return header + yaml.safe_dump({"data": data}, sort_keys=False, default_flow_style=None)


def band_statistics(
    records: Sequence[PatchRecord],
    channels: Sequence[int],
    sample: int | None = None,
    seed: int = 0,
    quantiles: int | None = None,
) -> BandStats:
    """Statistics of ``channels`` (1-based) over the images of ``records``, or over ``sample`` of them drawn with
    ``seed``, and with ``quantiles`` levels the per-band quantiles (a ``data.radiometric.histogram_reference``);
    read one patch at a time into exact per-band histograms of the uint8 values."""
    if not records:
        raise DataError("the split holds no patch; check data.root / data.train_csv")
    if sample is not None and sample < 1:
        raise ConfigError(f"--sample must be at least 1 patch, got {sample}")
    if quantiles is not None and quantiles < 2:
        raise ConfigError(f"--quantiles must be at least 2 levels (0 and 1), got {quantiles}")
    chosen = list(records)
    if sample is not None and sample < len(chosen):
        chosen = random.Random(seed).sample(chosen, sample)
    histogram = np.zeros((len(channels), 256), dtype=np.int64)
    for record in chosen:
        image = read_raster(record.image, bands=list(channels))
        if image.dtype != np.uint8:
            raise DataError(f"{record.image}: bands are {image.dtype}, FLAIR patches are uint8; convert the file")
        histogram += np.stack([np.bincount(band.ravel(), minlength=256) for band in image])
    pixels = int(histogram[0].sum())
    values = np.arange(256, dtype=np.int64)
    means = (histogram @ values) / pixels
    squares = histogram @ (values * values)
    stds = np.sqrt(np.maximum(squares / pixels - means**2, 0.0))
    if np.any(stds == 0):
        flat = [c for c, s in zip(channels, stds, strict=True) if s == 0]
        raise DataError(f"bands {flat} have the same value in every pixel read: no standard deviation to divide by")
    levels = None if quantiles is None else tuple(tuple(band) for band in histogram_quantiles(histogram, quantiles))
    return BandStats(tuple(channels), tuple(means.tolist()), tuple(stds.tolist()), len(chosen), pixels, levels)
