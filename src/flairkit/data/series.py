"""Sentinel-2 time series for zone detection: a list of acquisitions (one 10-band raster per date, with an optional
snow/cloud mask raster), read for each tile as the super-patch centred on it, then filtered and averaged exactly as
training does (:func:`~flairkit.data.sentinel.prepare_series`).

The list is a JSON or CSV file; relative paths start at its folder:

- JSON: ``{"acquisitions": [{"date": "2021-04-15", "path": "S2_20210415.tif", "mask": "S2_20210415_MASK.tif"}]}``
  (or the bare list), or a STAC ItemCollection whose features have ``properties.datetime`` and
  ``assets.data.href`` (and optionally ``assets.mask.href``);
- CSV: a header naming ``date``, ``path`` and optionally ``mask``, then one acquisition per row.

Data rasters hold the 10 FLAIR #2 bands (B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12) as reflectances; mask rasters
hold 2 bands, snow then cloud probability (0..100), as FLAIR #2's ``*_masks.npy``; a date without mask counts as
clear. Rasters may be in any CRS: each tile's super-patch is cut from a 10 m grid in the map's CRS (aligned on the
first acquisition's pixels when it is in that CRS, so that its pixels are read as they are; other rasters are
warped onto it, bilinear for data and nearest for masks). Outside a raster, pixels read as 0.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from flairkit.config.schema import SentinelConfig
from flairkit.data.sentinel import N_BANDS, SENTINEL_RESOLUTION, SentinelSample, day_offsets, prepare_series
from flairkit.errors import ConfigError, DataError

SERIES_KEY = "detect.sentinel2 (--input s2=FILE)"
MASK_BANDS = 2
"""Snow probability, cloud probability."""
ALIGNMENT_TOLERANCE = 1e-6
"""Pixels: a raster whose grid is this close to the series grid is read without warping."""


@dataclass(frozen=True)
class Acquisition:
    """One date of a series: its reflectances and, when given, its snow/cloud mask."""

    date: dt.date
    data: Path
    mask: Path | None = None


@dataclass(frozen=True)
class SentinelSeries:
    """A checked list of acquisitions and the training settings (``data.sentinel``) it is prepared with."""

    path: Path
    acquisitions: tuple[Acquisition, ...]
    config: SentinelConfig

    @property
    def files(self) -> list[Path]:
        """The list and every raster it names."""
        rasters = [p for a in self.acquisitions for p in (a.data, a.mask) if p is not None]
        return [self.path, *dict.fromkeys(rasters)]

    @property
    def offsets(self) -> np.ndarray:
        """(T,) day offsets (reference - date, the year ignored as FLAIR #2 does), read-only."""
        offsets = day_offsets([(a.date.month, a.date.day) for a in self.acquisitions], self.config.reference_date)
        offsets.flags.writeable = False
        return offsets


def _parse_date(text: Any, where: str) -> dt.date:
    if isinstance(text, str):
        for parse in (dt.date.fromisoformat, lambda t: dt.datetime.fromisoformat(t.replace("Z", "+00:00")).date()):
            try:
                return parse(text.strip())
            except ValueError:
                continue
    raise DataError(f"{where}: date {text!r} is not a YYYY-MM-DD date (or an ISO 8601 datetime); fix the entry")


def _entries(path: Path) -> list[tuple[Any, Any, Any]]:
    """(date, data path, mask path or None) of each acquisition of the list, as written."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the acquisitions list ({error}); replace it") from None
    if suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        header = {name.strip() for name in rows[0]} if rows else set()
        if not {"date", "path"} <= header:
            raise DataError(f"{path}: the CSV header must name date and path (and optionally mask); fix its first line")
        return [
            (row["date"], (row["path"] or "").strip(), (row.get("mask") or "").strip() or None)
            for row in ({k.strip(): v for k, v in r.items() if k is not None} for r in rows)
        ]
    if suffix != ".json":
        raise ConfigError(f"{SERIES_KEY}: {path} is neither .json nor .csv; give a JSON or CSV list of acquisitions")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error}); fix the file") from None
    if isinstance(raw, dict) and isinstance(raw.get("features"), list):
        found = []
        for number, item in enumerate(raw["features"], start=1):
            where = f"{path}, feature {number}"
            if not isinstance(item, dict):
                raise DataError(f"{where}: expected a STAC item (an object); fix the entry")
            assets = item.get("assets") or {}
            data = (assets.get("data") or {}).get("href")
            mask = (assets.get("mask") or {}).get("href")
            found.append(((item.get("properties") or {}).get("datetime"), data, mask))
        return found
    items = raw.get("acquisitions") if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise DataError(
            f'{path}: expected {{"acquisitions": [{{"date": ..., "path": ..., "mask": ...}}]}}, a list of such '
            "entries, or a STAC ItemCollection; fix the file"
        )
    if not all(isinstance(item, dict) for item in items):
        raise DataError(f"{path}: every acquisition must be an object with date, path and optionally mask")
    return [(item.get("date"), item.get("path"), item.get("mask")) for item in items]


def read_acquisitions(path: Path) -> tuple[Acquisition, ...]:
    """The acquisitions of a JSON or CSV list, sorted by date; every entry and file checked to exist."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: acquisitions list not found; give a JSON or CSV list of Sentinel-2 acquisitions")
    acquisitions = []
    for number, (date, data, mask) in enumerate(_entries(path), start=1):
        where = f"{path}, acquisition {number}"
        if not isinstance(data, str) or not data:
            raise DataError(f"{where}: no raster path; give each acquisition its 10-band GeoTIFF")
        files = []
        for name in (data, mask):
            if name is None:
                files.append(None)
                continue
            if not isinstance(name, str):
                raise DataError(f"{where}: {name!r} is not a path; fix the entry")
            file = path.parent / name
            if not file.is_file():
                raise DataError(f"{where}: {file}: no such file; check the path (relative to the list's folder)")
            files.append(file)
        acquisitions.append(Acquisition(_parse_date(date, where), files[0], files[1]))
    if not acquisitions:
        raise DataError(f"{path}: lists no acquisition; add the Sentinel-2 dates of the area")
    return tuple(sorted(acquisitions, key=lambda a: a.date))


def open_raster(path: Path) -> rasterio.io.DatasetReader:
    """``path`` opened; a DataError naming it when it is no raster."""
    try:
        return rasterio.open(path)
    except RasterioError as error:
        raise DataError(f"{path}: cannot open raster ({error}); give a GeoTIFF") from None


S2_BANDS_TEXT = "reflectances B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12"


def inspect_acquisitions(
    path: Path, bands: int = N_BANDS, what: str = S2_BANDS_TEXT, name: str = "Sentinel-2", masks: bool = True
) -> tuple[Acquisition, ...]:
    """The acquisitions of the list ``path``, their rasters checked: ``bands`` bands (``what``) per date, a
    georeferencing, and snow/cloud masks only where ``masks`` allows them (Sentinel-1 has none)."""
    acquisitions = read_acquisitions(path)
    for acquisition in acquisitions:
        if acquisition.mask is not None and not masks:
            raise DataError(f"{path}: {acquisition.mask} is a mask but {name} dates have none; remove the mask entries")
        for file, count, text in (
            (acquisition.data, bands, what),
            (acquisition.mask, MASK_BANDS, "snow then cloud probability"),
        ):
            if file is None:
                continue
            with open_raster(file) as src:
                if src.count != count:
                    raise DataError(
                        f"{file}: has {src.count} band(s) but a {name} "
                        f"{'mask' if file == acquisition.mask else 'date'} needs {count} ({text}); "
                        "stack them in this order (gdalbuildvrt -separate)"
                    )
                if src.crs is None:
                    raise DataError(f"{file}: has no coordinate reference system; assign one (gdal_edit.py -a_srs)")
    return acquisitions


def inspect_series(path: Path, config: SentinelConfig) -> SentinelSeries:
    """The series of the list ``path``: its rasters checked (band counts, georeferencing)."""
    return SentinelSeries(Path(path), inspect_acquisitions(path), config)


def check_coverage(
    series: SentinelSeries | Sequence[Path], crs: CRS, bounds: Sequence[float], where: Path, name: str = "Sentinel-2"
) -> None:
    """A DataError unless some raster of ``series`` (its acquisitions, or raster paths) meets ``bounds`` (left,
    bottom, right, top in ``crs``) of map ``where``."""
    left, bottom, right, top = bounds
    files = [a.data for a in series.acquisitions] if isinstance(series, SentinelSeries) else list(series)
    for file in files:
        with open_raster(file) as src:
            a, b, c, d = transform_bounds(src.crs, crs, *src.bounds) if src.crs != crs else tuple(src.bounds)
        if a < right and c > left and b < top and d > bottom:
            return
    listed = isinstance(series, SentinelSeries)
    source, what = (series.path, "acquisition") if listed else (files[0], "raster")
    raise DataError(
        f"{source}: no {what} covers {where} ({left:.0f}, {bottom:.0f}, {right:.0f}, {top:.0f} in "
        f"{crs}); give the {name} data of this area"
    )


def series_grid(
    first: Path,
    crs: CRS,
    bounds: Sequence[float],
    buffer: int,
    res: float = SENTINEL_RESOLUTION,
    origin: tuple[float, float] = (0.0, 0.0),
) -> tuple[Affine, int, int]:
    """The ``res`` grid in ``crs`` over ``bounds`` and ``buffer`` pixels around them, aligned on the pixel corners of
    raster ``first`` when it lies in ``crs`` with ``res`` north-up pixels, else on ``origin`` + multiples of ``res``."""
    x0, y0 = origin
    with open_raster(first) as src:
        t = src.transform
        if src.crs == crs and t.b == 0 and t.d == 0 and abs(t.a - res) < 1e-9 and abs(t.e + res) < 1e-9:
            x0, y0 = t.c, t.f
    left, bottom, right, top = bounds
    left = x0 + (math.floor((left - x0) / res) - buffer) * res
    top = y0 + (math.ceil((top - y0) / res) + buffer) * res
    width = math.ceil((right - left) / res - ALIGNMENT_TOLERANCE) + buffer
    height = math.ceil((top - bottom) / res - ALIGNMENT_TOLERANCE) + buffer
    return Affine(res, 0.0, left, 0.0, -res, top), width, height


def _aligned(src: rasterio.io.DatasetReader, crs: CRS, grid: Affine) -> tuple[int, int] | None:
    """(row, col) of the grid's origin in ``src``'s pixels when ``src`` lies on the grid, else None."""
    t = src.transform
    if src.crs != crs or t.b != 0 or t.d != 0 or abs(t.a - grid.a) > 1e-9 or abs(t.e - grid.e) > 1e-9:
        return None
    col, row = (grid.c - t.c) / grid.a, (grid.f - t.f) / grid.e
    if abs(col - round(col)) > ALIGNMENT_TOLERANCE or abs(row - round(row)) > ALIGNMENT_TOLERANCE:
        return None
    return round(row), round(col)


def centred_window(transform: Affine, grid: Affine, row: int, col: int, size: int, side: int) -> tuple[int, int]:
    """(row, col) in ``grid`` of the top-left pixel of the ``side`` px window whose pixel ``side // 2`` holds the
    centre of the ``size`` px tile at (``row``, ``col``) of a map with ``transform``, as FLAIR #2's centroids."""
    x, y = transform @ (col + size / 2, row + size / 2)
    centre_col = math.floor(round((x - grid.c) / grid.a, 6))
    centre_row = math.floor(round((y - grid.f) / grid.e, 6))
    return centre_row - side // 2, centre_col - side // 2


class GridRaster:
    """One raster read by windows of a grid: directly when it lies on the grid, else warped."""

    def __init__(self, path: Path, crs: CRS, grid: Affine, width: int, height: int, resampling: Resampling):
        self.path = path
        self._src = open_raster(path)
        self._offset = _aligned(self._src, crs, grid)
        self._warped = None
        if self._offset is None:
            self._warped = WarpedVRT(
                self._src, crs=crs, transform=grid, width=width, height=height, resampling=resampling, nodata=0
            )

    def read(self, row: int, col: int, size: int) -> np.ndarray:
        try:
            if self._warped is not None:
                return self._warped.read(window=Window(col, row, size, size))
            r0, c0 = self._offset
            row, col = r0 + row, c0 + col
            # Boundless reads go through a VRT, ten times slower: only for windows leaving the raster.
            inside = row >= 0 and col >= 0 and row + size <= self._src.height and col + size <= self._src.width
            return self._src.read(window=Window(col, row, size, size), boundless=not inside, fill_value=0)
        except RasterioError as error:
            raise DataError(f"{self.path}: read failed ({error}); the file may be corrupt") from None

    def close(self) -> None:
        if self._warped is not None:
            self._warped.close()
        self._src.close()


class SeriesReader:
    """The super-patch series of each tile of a map with ``transform`` in ``crs`` (see the module's notes).

    Each call reads the tile's own windows and prepares them from scratch: no state is shared between tiles, so
    a tile's input does not depend on the tiles read before it. Not thread-safe: each thread opens its own reader.
    """

    def __init__(self, series: SentinelSeries, crs: CRS, transform: Affine, width: int, height: int):
        self.series = series
        self.transform = transform
        self.size = series.config.sat_patch_size
        left, top = transform @ (0, 0)
        right, bottom = transform @ (width, height)
        bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        first = series.acquisitions[0].data
        self.grid, grid_width, grid_height = series_grid(first, crs, bounds, self.size // 2 + 1)
        self._offsets = series.offsets
        self._rasters: list[tuple[GridRaster, GridRaster | None]] = []
        try:
            for acquisition in series.acquisitions:
                data = GridRaster(acquisition.data, crs, self.grid, grid_width, grid_height, Resampling.bilinear)
                self._rasters.append((data, None))
                if acquisition.mask is not None:
                    mask = GridRaster(acquisition.mask, crs, self.grid, grid_width, grid_height, Resampling.nearest)
                    self._rasters[-1] = (data, mask)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> SeriesReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for data, mask in self._rasters:
            data.close()
            if mask is not None:
                mask.close()
        self._rasters = []

    def window(self, row: int, col: int, size: int) -> tuple[int, int]:
        """(row, col) in the series grid of the top-left pixel of the super-patch of the ``size`` px tile at
        (``row``, ``col``): the super-patch's pixel ``s // 2`` holds the tile's centre, as FLAIR #2's centroids."""
        return centred_window(self.transform, self.grid, row, col, size, self.size)

    def sample(self, row: int, col: int, size: int) -> SentinelSample:
        """The tile's super-patch series, prepared as ``data.sentinel`` says (float32 reflectances, day offsets)."""
        top, left = self.window(row, col, size)
        s = self.size
        data = np.stack([raster.read(top, left, s) for raster, _ in self._rasters])
        masks = np.stack(
            [
                np.zeros((MASK_BANDS, s, s), np.uint8) if mask is None else mask.read(top, left, s)
                for _, mask in self._rasters
            ]
        )
        return prepare_series(data, masks, self._offsets, self.series.config)

    def tile_input(self, row: int, col: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The tile's (T, 10, s, s) series divided by ``data.sentinel.divisor`` and its (T,) day offsets, as training
        feeds U-T&T."""
        sample = self.sample(row, col, size)
        return torch.from_numpy(sample.series) / self.series.config.divisor, torch.from_numpy(sample.dates)
