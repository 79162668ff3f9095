"""Reading and writing GeoTIFF rasters: the one place that opens raster files for patches and masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.transform import Affine

from flairkit.atomic import atomic_path
from flairkit.errors import DataError

LAMBERT93 = CRS.from_epsg(2154)
AERIAL_RESOLUTION = 0.2


def read_raster(path: Path, bands: Sequence[int] | None = None) -> np.ndarray:
    """Read a raster as a (bands, height, width) array; ``bands`` are 1-based indexes in the file.

    Raises :class:`DataError` naming the file when it is missing, unreadable, truncated or lacks a band.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path (relative paths in CSV lists start at the CSV)")
    try:
        with rasterio.open(path) as src:
            if bands is not None:
                missing = [b for b in bands if not 1 <= b <= src.count]
                if missing:
                    raise DataError(
                        f"{path}: has {src.count} band(s) but band(s) {missing} were requested; "
                        f"select bands within 1..{src.count} (data.channels)"
                    )
                return src.read(list(bands))
            return src.read()
    except RasterioError as error:
        raise DataError(f"{path}: cannot read raster ({error}); the file is corrupt or truncated, replace it") from None


def read_profile(path: Path) -> dict[str, Any]:
    """The rasterio profile (driver, size, dtype, CRS, transform, ...) of a raster."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with rasterio.open(path) as src:
            return dict(src.profile)
    except RasterioError as error:
        raise DataError(f"{path}: cannot read raster header ({error}); replace the file") from None


def write_raster(
    path: Path,
    array: np.ndarray,
    *,
    crs: CRS | None,
    transform: Affine,
    overwrite: bool = False,
    nodata: float | None = None,
    compress: str = "lzw",
    tiled: bool = False,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> Path:
    """Write a (bands, height, width) or (height, width) array as a GeoTIFF, atomically."""
    data = array[None] if array.ndim == 2 else array
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "compress": compress,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    try:
        with atomic_path(Path(path), overwrite=overwrite) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if colormap is not None:
                dst.write_colormap(1, colormap)
    except (OSError, RasterioError) as error:  # the atomic writer has removed the partial file
        raise DataError(
            f"{path}: cannot write the raster ({error}); check the free space and permissions of "
            f"{Path(path).parent}, or choose another output"
        ) from None
    return Path(path)
