"""Pictures for the HTML reports: natural-colour images, class maps, error maps and raster overviews.

Every picture is a uint8 RGB(A) array encoded as PNG bytes in memory. Large rasters are read at a
decimated size, so GDAL takes the pixels from the file's overviews when it has some.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader

from flairkit.errors import DataError
from flairkit.nomenclature import Nomenclature

STRETCH_PERCENTILES = (2.0, 98.0)
PERCENTILE_SAMPLES = 2**18
"""At least about this many pixels (a regular grid) give the percentiles of a band."""
STRETCH_NOTE = (
    "natural colour: bands 1, 2, 3 shown as red, green, blue (band 1 in grey for a single-band image), each "
    "stretched linearly from its 2nd to its 98th percentile over the picture"
)
UNSCORED_RGB = (0, 0, 0)
"""Colour of pixels whose truth is no scored class (in class and error pictures)."""
ERROR_RGB = (255, 0, 0)
ERROR_NOTE = "error: red where the prediction differs from the truth, the image in grey where it agrees, black unscored"


def png_bytes(picture: np.ndarray) -> bytes:
    """PNG bytes of a (H, W, 3) RGB or (H, W, 4) RGBA uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buffer, format="png")
    return buffer.getvalue()


def natural_colour(bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """A (H, W, 3) uint8 picture of a (C, H, W) image, stretched as :data:`STRETCH_NOTE` says.

    ``valid``: the (H, W) pixels to compute the percentiles on (all when None); the others are black.
    """
    sources = (0, 1, 2) if bands.shape[0] >= 3 else (0, 0, 0)
    mask = np.ones(bands.shape[1:], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    picture = np.zeros((*bands.shape[1:], 3), dtype=np.uint8)
    if not mask.any():
        return picture
    step = max(1, math.isqrt(mask.size // PERCENTILE_SAMPLES))
    sampled = mask[::step, ::step]
    for index, source in enumerate(sources):
        channel = bands[source]
        sample = channel[::step, ::step][sampled]
        low, high = np.percentile(sample if sample.size else channel[mask], STRETCH_PERCENTILES)
        scale = 255.0 / max(float(high - low), 1e-6)
        if channel.dtype.kind == "u" and channel.dtype.itemsize <= 2:
            # A lookup table: no float copy of a large overview.
            levels = np.arange(2 ** (8 * channel.dtype.itemsize), dtype=np.float32)
            picture[..., index] = np.clip((levels - low) * scale, 0, 255).astype(np.uint8)[channel]
        else:
            picture[..., index] = np.clip((channel.astype(np.float32) - low) * scale, 0, 255)
    picture[~mask] = 0
    return picture


def _rgb(colour: str) -> list[int]:
    return [int(colour[i : i + 2], 16) for i in (1, 3, 5)]


def target_palette(nomenclature: Nomenclature) -> np.ndarray:
    """A (256, 3) uint8 lookup from target index to class colour; other values are :data:`UNSCORED_RGB`."""
    palette = np.tile(np.array(UNSCORED_RGB, dtype=np.uint8), (256, 1))
    for target in nomenclature.targets:
        palette[target.index] = _rgb(target.colour)
    return palette


def scored_lookup(targets: Sequence[int]) -> np.ndarray:
    """A (256,) bool lookup: True for the scored target indices."""
    lookup = np.zeros(256, dtype=bool)
    lookup[list(targets)] = True
    return lookup


def error_picture(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """(H, W, 3) picture of the errors, as :data:`ERROR_NOTE` says; ``scored`` from :func:`scored_lookup`."""
    grey = image.astype(np.float32).mean(axis=2).astype(np.uint8)
    picture = np.repeat(grey[..., None], 3, axis=2)
    picture[(truth != prediction) & scored[truth]] = ERROR_RGB
    picture[~scored[truth]] = UNSCORED_RGB
    return picture


def overview_shape(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(rows, columns) of a picture of a ``width`` x ``height`` raster whose longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[DatasetReader]:
    try:
        with rasterio.open(path) as src:
            yield src
    except RasterioError as error:
        raise DataError(f"{path}: cannot read it for the report ({error}); check that the file is complete") from None


def _overview(src: DatasetReader, max_side: int, bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    shape = overview_shape(src.width, src.height, max_side)
    # Nearest: class values are never mixed into values of no class.
    data = src.read(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest)
    return data, src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0


def read_overview(path: Path, max_side: int, bands: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A decimated read of ``bands`` (1-based; all when None) of a raster whose longer side is ``max_side``.

    Returns the (C, H, W) array and the (H, W) bool mask of valid pixels. GDAL reads the file's overviews
    when it has some, else every block once.
    """
    with _opened(path) as src:
        return _overview(src, max_side, src.indexes if bands is None else bands)


def read_natural_colour(path: Path, max_side: int) -> np.ndarray:
    """A (H, W, 3) natural-colour picture (:data:`STRETCH_NOTE`) of a raster, longer side at most ``max_side``."""
    with _opened(path) as src:
        data, valid = _overview(src, max_side, [1, 2, 3] if src.count >= 3 else [1])
    return natural_colour(data, valid)


def side_by_side(pictures: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """(H, W, 3) pictures of one height in a row, ``gap`` white columns apart."""
    blank = np.full((pictures[0].shape[0], gap, 3), 255, dtype=np.uint8)
    row: list[np.ndarray] = []
    for picture in pictures:
        row += [blank, picture] if row else [picture]
    return np.concatenate(row, axis=1)


def map_palette(nomenclature: Nomenclature, codes: bool) -> np.ndarray:
    """A (256, 4) uint8 RGBA lookup from map value (FLAIR code or target index) to class colour, else transparent."""
    lookup = np.zeros((256, 4), dtype=np.uint8)
    for target in nomenclature.targets:
        if target.enabled:
            value = int(nomenclature.map_targets(target.index, codes))
            lookup[value] = [*_rgb(target.colour), 255]
    return lookup
