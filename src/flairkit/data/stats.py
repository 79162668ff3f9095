"""Per-band normalisation statistics of a dataset's patches (``flair data stats``)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import yaml

from flairkit.data.discovery import PatchRecord
from flairkit.data.rasters import read_raster
from flairkit.errors import ConfigError, DataError


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation (over pixels, population) of each selected band."""

    channels: tuple[int, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    patches: int
    pixels: int

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
        return header + yaml.safe_dump({"data": {"normalization": self.normalization()}}, sort_keys=False)


def band_statistics(
    records: Sequence[PatchRecord], channels: Sequence[int], sample: int | None = None, seed: int = 0
) -> BandStats:
    """Statistics of ``channels`` (1-based) over the images of ``records``, or over ``sample`` of them drawn with
    ``seed``; read one patch at a time, summed exactly in integers."""
    if not records:
        raise DataError("the split holds no patch; check data.root / data.train_csv")
    if sample is not None and sample < 1:
        raise ConfigError(f"--sample must be at least 1 patch, got {sample}")
    chosen = list(records)
    if sample is not None and sample < len(chosen):
        chosen = random.Random(seed).sample(chosen, sample)
    sums = np.zeros(len(channels), dtype=np.int64)
    squares = np.zeros(len(channels), dtype=np.int64)
    pixels = 0
    for record in chosen:
        image = read_raster(record.image, bands=list(channels))
        if image.dtype != np.uint8:
            raise DataError(f"{record.image}: bands are {image.dtype}, FLAIR patches are uint8; convert the file")
        values = image.reshape(len(channels), -1).astype(np.int64)
        sums += values.sum(axis=1)
        squares += (values * values).sum(axis=1)
        pixels += values.shape[1]
    means = sums / pixels
    stds = np.sqrt(np.maximum(squares / pixels - means**2, 0.0))
    if np.any(stds == 0):
        flat = [c for c, s in zip(channels, stds, strict=True) if s == 0]
        raise DataError(f"bands {flat} have the same value in every pixel read: no standard deviation to divide by")
    return BandStats(tuple(channels), tuple(means.tolist()), tuple(stds.tolist()), len(chosen), pixels)
