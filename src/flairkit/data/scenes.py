"""Opening orthophotos, for zone detection and for cutting patches: input checks, windowed band reads.

Every input is checked before any work starts (georeferencing, band count, 8-bit bands, resolution), so
that a batch of inputs fails on its first bad file, not hours into the run.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ElementTree
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
from flairkit.errors import DataError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
"""Files picked up when an input is a folder."""
RESOLUTION_TOLERANCE = 0.1
"""Relative departure from 0.2 m above which a warning is given."""

Fill = Literal["zero", "reflect"]
Rectangles = tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class Span:
    """A half-open pixel interval ``[start, stop)`` along one axis."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def intersect(self, other: Span) -> Span | None:
        start, stop = max(self.start, other.start), min(self.stop, other.stop)
        return Span(start, stop) if start < stop else None


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
    implied_nodata: bool = False
    """``nodata`` is 0 because the file declares no nodata value nor mask: pixels whose selected bands are all 0."""
    coverage: Rectangles | None = None
    """A VRT's source rectangles (column, row, width, height); pixels outside all of them are missing. None: all
    pixels are covered."""
    sources: tuple[Path, ...] = ()
    """Every file GDAL reads for this input: the file itself, a VRT's sources, sidecar files."""

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


def vrt_coverage(path: Path, channels: Sequence[int], width: int, height: int) -> Rectangles | None:
    """The pixel rectangles that the sources of the selected bands of a VRT fill; None when every pixel is covered
    (or the VRT is not a plain mosaic of sources)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return vrt_text_coverage(text, channels, width, height)


def vrt_text_coverage(text: str, channels: Sequence[int], width: int, height: int) -> Rectangles | None:
    """:func:`vrt_coverage` of the VRT XML ``text``."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return None
    if root.get("subClass"):  # warped or processed VRT: its pixels are computed, not placed
        return None
    selected = {str(c) for c in channels}
    rectangles = set()
    for band in root.iter("VRTRasterBand"):
        if band.get("band") not in selected:
            continue
        if band.get("subClass") not in (None, "VRTDerivedRasterBand"):
            return None
        for source in band:
            if source.find("SourceFilename") is None:
                continue
            rect = source.find("DstRect")
            if rect is None:
                return None  # a source without DstRect fills the whole raster
            x, y = float(rect.get("xOff", 0)), float(rect.get("yOff", 0))
            right, bottom = x + float(rect.get("xSize", width)), y + float(rect.get("ySize", height))
            col0, row0 = max(math.floor(x), 0), max(math.floor(y), 0)
            col1, row1 = min(math.ceil(right), width), min(math.ceil(bottom), height)
            if col0 < col1 and row0 < row1:
                if (col0, row0, col1, row1) == (0, 0, width, height):
                    return None
                rectangles.add((col0, row0, col1 - col0, row1 - row0))
    return tuple(sorted(rectangles))


def inspect_input(
    path: Path, channels: Sequence[int], nodata: float | None = None, all_zero_is_nodata: bool = False
) -> InputRaster:
    """Open ``path`` and check it can feed a model reading ``channels`` (1-based); ``nodata`` overrides the file's.

    With ``all_zero_is_nodata``, a file that declares no nodata value nor mask gets nodata 0 (pixels whose selected
    bands are all 0 are missing). Pixels that no source of a VRT covers are missing. Raises :class:`DataError`
    naming the file and the fix; warns (:class:`ResolutionWarning`) when the pixel size is not about 0.2 m.
    """
    path = Path(path)
    try:
        with rasterio.open(path) as src:
            crs, transform, count = src.crs, src.transform, src.count
            width, height, dtypes = src.width, src.height, src.dtypes
            flags = src.mask_flag_enums
            file_nodata = src.nodata
            is_vrt = src.driver == "VRT"
            sources = tuple(dict.fromkeys([path, *map(Path, src.files)]))
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
    declared = nodata if nodata is not None else file_nodata
    implied = all_zero_is_nodata and declared is None and not has_mask
    raster = InputRaster(
        path=path,
        width=width,
        height=height,
        count=count,
        crs=crs,
        transform=transform,
        nodata=0 if implied else declared,
        dataset_mask=has_mask,
        implied_nodata=implied,
        coverage=vrt_coverage(path, channels, width, height) if is_vrt else None,
        sources=sources,
    )
    check_resolution(raster)
    return raster


def nodata_note(raster: InputRaster) -> str | None:
    """Why pixels of ``raster`` that the file does not declare missing were written as nodata; None if none can be."""
    rules = []
    if raster.coverage is not None:
        rules.append("pixels that no source of the VRT covers")
    if raster.implied_nodata:
        rules.append(
            "pixels whose selected bands are all 0 (the file declares no nodata; "
            "set detect.all_zero_is_nodata=false to classify them)"
        )
    return ", and ".join(rules) if rules else None


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
        self._coverage = None if raster.coverage is None else np.array(raster.coverage, dtype=np.int64).reshape(-1, 4)
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
            valid = np.zeros(data.shape[1:], dtype=bool)
            for band in data:  # band by band: no (bands, rows, cols) temporary
                valid |= band != self.raster.nodata
        if self.raster.dataset_mask:
            mask = self._src.dataset_mask(window=Window(cols.start, rows.start, cols.size, rows.size)) > 0
            valid = mask if valid is None else valid & mask
        if self._coverage is not None:
            covered = covered_pixels(self._coverage, rows, cols)
            valid = covered if valid is None else valid & covered
        return valid


def covered_pixels(coverage: np.ndarray, rows: Span, cols: Span) -> np.ndarray:
    """Where pixels of ``rows`` x ``cols`` lie in one of the (column, row, width, height) rectangles of ``coverage``."""
    covered = np.zeros((rows.size, cols.size), dtype=bool)
    col0, row0 = coverage[:, 0], coverage[:, 1]
    col1, row1 = col0 + coverage[:, 2], row0 + coverage[:, 3]
    hits = (col0 < cols.stop) & (col1 > cols.start) & (row0 < rows.stop) & (row1 > rows.start)
    for c0, r0, c1, r1 in zip(col0[hits], row0[hits], col1[hits], row1[hits], strict=True):
        covered[
            max(r0 - rows.start, 0) : min(r1, rows.stop) - rows.start,
            max(c0 - cols.start, 0) : min(c1, cols.stop) - cols.start,
        ] = True
    return covered
