"""Opening orthophotos for zone detection: input checks, and windowed reads of the selected bands.

Every input is checked before any work starts (georeferencing, band count, 8-bit bands, resolution), so
that a batch of inputs fails on its first bad file, not hours into the run.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window

from flairkit.data.rasters import AERIAL_RESOLUTION
from flairkit.detection.tiling import Span
from flairkit.errors import DataError

logger = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
"""Files picked up when an input is a folder."""
RESOLUTION_TOLERANCE = 0.1
"""Relative departure from 0.2 m above which a warning is given."""

Fill = Literal["zero", "reflect"]


class ResolutionWarning(UserWarning):
    """The input's pixel size differs from the 0.2 m the FLAIR models were trained on."""


@dataclass(frozen=True)
class InputRaster:
    """What detection needs to know about one input orthophoto."""

    path: Path
    width: int
    height: int
    count: int
    crs: CRS
    transform: Affine
    nodata: float | None
    """Value that marks missing pixels (when every selected band has it); None when there is none."""
    dataset_mask: bool
    """Whether the file carries an alpha band or a mask band that marks missing pixels."""

    @property
    def resolution(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def pixel_area_km2(self) -> float:
        x, y = self.resolution
        return x * y / 1e6

    @property
    def area_km2(self) -> float:
        return self.width * self.height * self.pixel_area_km2


def expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    """The input files: files as given, folders replaced by their rasters (sorted)."""
    if not inputs:
        raise DataError("no input orthophoto given; pass one or more GeoTIFF/VRT files or folders")
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"{item}: folder holds no raster ({', '.join(RASTER_SUFFIXES)}); check the path")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item}: no such file or folder; check the path")
    return files


def inspect_input(path: Path, channels: Sequence[int], nodata: float | None = None) -> InputRaster:
    """Open ``path`` and check it can feed a model reading ``channels`` (1-based); ``nodata`` overrides the file's.

    Raises :class:`DataError` naming the file and the fix; warns (:class:`ResolutionWarning`) when the pixel
    size is not about 0.2 m.
    """
    path = Path(path)
    try:
        with rasterio.open(path) as src:
            crs, transform, count = src.crs, src.transform, src.count
            width, height, dtypes = src.width, src.height, src.dtypes
            flags = src.mask_flag_enums
            file_nodata = src.nodata
    except RasterioError as error:
        raise DataError(f"{path}: cannot open raster ({error}); check that it is a valid GeoTIFF or VRT") from None
    if crs is None:
        raise DataError(
            f"{path}: has no coordinate reference system; assign one (e.g. gdal_edit.py -a_srs EPSG:2154 {path.name})"
        )
    if transform.b != 0 or transform.d != 0 or transform.e >= 0:
        raise DataError(
            f"{path}: is rotated or not north-up (transform {tuple(transform)[:6]}); "
            f"warp it to a north-up grid first (gdalwarp)"
        )
    missing = [c for c in channels if not 1 <= c <= count]
    if missing:
        raise DataError(
            f"{path}: has {count} band(s) but data.channels={list(channels)} needs band(s) {missing}; "
            f"use a model for these bands or set data.channels to bands within 1..{count}"
        )
    wrong = sorted({dtypes[c - 1] for c in channels if dtypes[c - 1] != "uint8"})
    if wrong:
        raise DataError(
            f"{path}: bands are {', '.join(wrong)} but FLAIR models expect 8-bit bands; "
            f"convert it (gdal_translate -ot Byte -scale ...)"
        )
    selected_flags = [flags[c - 1] for c in channels]
    has_mask = any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in selected_flags)
    raster = InputRaster(
        path=path,
        width=width,
        height=height,
        count=count,
        crs=crs,
        transform=transform,
        nodata=nodata if nodata is not None else file_nodata,
        dataset_mask=has_mask,
    )
    check_resolution(raster)
    return raster


def check_resolution(raster: InputRaster) -> None:
    """Warn when the pixel size is not about 0.2 m (in the units of a projected CRS)."""
    x, y = raster.resolution
    if raster.crs.is_geographic:
        message = (
            f"{raster.path}: coordinates are in degrees ({raster.crs}); FLAIR models expect 0.2 m pixels in a "
            f"projected CRS such as EPSG:2154 - reproject with gdalwarp -t_srs EPSG:2154 -tr 0.2 0.2"
        )
    elif any(abs(r - AERIAL_RESOLUTION) > RESOLUTION_TOLERANCE * AERIAL_RESOLUTION for r in (x, y)):
        message = (
            f"{raster.path}: pixels are {x:g} x {y:g} m but FLAIR models were trained on "
            f"{AERIAL_RESOLUTION} m; resample with gdalwarp -tr 0.2 0.2 for reliable maps"
        )
    else:
        return
    logger.warning(message)
    warnings.warn(message, ResolutionWarning, stacklevel=3)


def reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices of ``[start, stop)`` folded into ``[0, length)`` by mirror reflection (edge not repeated)."""
    index = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.abs(index) % period
    return np.where(index >= length, period - index, index)


class SceneReader:
    """Reads rectangles of the selected bands of one input; rectangles may reach outside the scene.

    Not thread-safe: each thread opens its own reader.
    """

    def __init__(self, raster: InputRaster, channels: Sequence[int]):
        self.raster = raster
        self.channels = list(channels)
        try:
            self._src = rasterio.open(raster.path)
        except RasterioError as error:
            raise DataError(f"{raster.path}: cannot open raster ({error})") from None

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, rows: Span, cols: Span) -> np.ndarray:
        window = Window(cols.start, rows.start, cols.size, rows.size)
        try:
            return self._src.read(self.channels, window=window)
        except RasterioError as error:
            raise DataError(
                f"{self.raster.path}: read failed in rows {rows.start}..{rows.stop}, columns {cols.start}..{cols.stop} "
                f"({error}); the file may be corrupt or truncated"
            ) from None

    def read_region(self, rows: Span, cols: Span, fill: Fill) -> np.ndarray:
        """A (bands, rows, cols) uint8 array; outside the scene it holds 0 (``zero``) or the mirrored scene."""
        height, width = self.raster.height, self.raster.width
        inside_rows, inside_cols = rows.intersect(Span(0, height)), cols.intersect(Span(0, width))
        if inside_rows == rows and inside_cols == cols:
            return self._read(rows, cols)
        if fill == "zero":
            region = np.zeros((len(self.channels), rows.size, cols.size), dtype=np.uint8)
            if inside_rows is not None and inside_cols is not None:
                region[
                    :,
                    inside_rows.start - rows.start : inside_rows.stop - rows.start,
                    inside_cols.start - cols.start : inside_cols.stop - cols.start,
                ] = self._read(inside_rows, inside_cols)
            return region
        row_index = reflect_indices(rows.start, rows.stop, height)
        col_index = reflect_indices(cols.start, cols.stop, width)
        r0, c0 = int(row_index.min()), int(col_index.min())
        source = self._read(Span(r0, int(row_index.max()) + 1), Span(c0, int(col_index.max()) + 1))
        return source[:, (row_index - r0)[:, None], (col_index - c0)[None, :]]

    def valid(self, rows: Span, cols: Span, data: np.ndarray) -> np.ndarray | None:
        """Where pixels of ``rows`` x ``cols`` (inside the scene; ``data`` holds their bands) are not missing.

        None when the input marks no pixel as missing.
        """
        valid = None
        if self.raster.nodata is not None:
            valid = np.any(data != self.raster.nodata, axis=0)
        if self.raster.dataset_mask:
            mask = self._src.dataset_mask(window=Window(cols.start, rows.start, cols.size, rows.size)) > 0
            valid = mask if valid is None else valid & mask
        return valid
