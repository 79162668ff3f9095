"""A synthetic orthophoto written again as the separate products a mapping team holds: BD ORTHO RVB and IRC,
a DSM and a DTM (float32 metres), which ``flair detect --input rgb=... nir=... dsm=... dtm=...`` assembles back.

- ``<stem>_RVB.tif``: red, green, blue, 8-bit, 0.2 m.
- ``<stem>_IRC.tif``: near infrared, red, green, 8-bit, 0.2 m (IGN's BD ORTHO IRC band order), so NIR is band 1.
- ``<stem>_DTM.tif``: a sloping terrain (a plane) at 1 m, a few metres wider than the orthophoto so that
  bilinear warping onto the 0.2 m grid never reaches its edge and gives the plane back.
- ``<stem>_DSM.tif``: the terrain plus the orthophoto's height above ground (its 8-bit band x 0.2 m), at 0.2 m:
  a coarser DSM could not carry the 0.2 m detail of the band it must give back.

``DSM - DTM`` warped onto the orthophoto's grid is the elevation band within float32 rounding, far below the
encoding's 0.1 m half-step, so the assembled bands equal the stacked orthophoto's.

With ``crs`` or ``resolution`` the products are then warped (bilinear, strip by strip) into that CRS, RVB, IRC and
DSM at ``resolution`` (in the CRS's units; default 0.2) and the DTM at 1 unit, so that assembling them shows warping
between CRSs and resolutions; their pixels then equal rasterio's reprojection of the products above.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform
from rasterio.windows import Window

from flairkit.data.assembly import ELEVATION_STEP
from flairkit.data.rasters import AERIAL_RESOLUTION

IRC_BANDS = (4, 1, 2)
"""The orthophoto's bands (1-based R, G, B, NIR, elevation) in IGN's IRC product: NIR, red, green."""
DTM_RESOLUTION = 1.0
DTM_MARGIN = 4
"""DTM pixels beyond the orthophoto on each side."""
GROUND = 120.0
"""Metres: the terrain at the orthophoto's top-left corner."""
SLOPE = (0.01, -0.004)
"""Terrain rise per metre east and per metre south."""
STRIP = 512
"""Rows of the orthophoto read at a time."""


def terrain(x: np.ndarray, y: np.ndarray, left: float, top: float) -> np.ndarray:
    """The synthetic terrain height in metres at map coordinates ``x``, ``y`` (a plane through ``GROUND`` at
    ``left``, ``top``)."""
    return (GROUND + SLOPE[0] * (x - left) + SLOPE[1] * (top - y)).astype(np.float32)


def product_paths(ortho: Path) -> dict[str, Path]:
    """The products' files of the orthophoto ``ortho`` (kind -> path), next to it."""
    return {kind: ortho.with_name(f"{ortho.stem}_{kind}.tif") for kind in ("RVB", "IRC", "DSM", "DTM")}


def write_products(ortho: Path, crs: str | None = None, resolution: float | None = None) -> dict[str, Path]:
    """Write the RVB, IRC, DSM and DTM products of the 5-band orthophoto ``ortho`` next to it, strip by strip, in
    ``crs`` (default the orthophoto's) at ``resolution`` (default 0.2, the DTM at 1); returns their paths."""
    paths = product_paths(ortho)
    _write_on_ortho_grid(ortho, paths)
    if crs is not None or resolution is not None:
        for kind, path in paths.items():
            res = DTM_RESOLUTION if kind == "DTM" else resolution or AERIAL_RESOLUTION
            warp_product(path, CRS.from_user_input(crs) if crs is not None else None, res)
    return paths


def warp_product(path: Path, crs: CRS | None, resolution: float) -> None:
    """Replace the raster ``path`` by its bilinear warp into ``crs`` (None: its own) at ``resolution``, by strips."""
    warped = path.with_name(f".{path.name}.warping")
    with rasterio.open(path) as src:
        target = src.crs if crs is None else crs
        transform, width, height = calculate_default_transform(
            src.crs, target, src.width, src.height, *src.bounds, resolution=resolution
        )
        grid = {"crs": target, "transform": transform, "width": width, "height": height}
        profile = src.profile | grid | {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "lzw"}
        with (
            WarpedVRT(src, resampling=Resampling.bilinear, **grid) as vrt,
            rasterio.open(warped, "w", **profile) as dst,
        ):
            dst.colorinterp = src.colorinterp
            dst.units = src.units
            for row in range(0, height, STRIP):
                window = Window(0, row, width, min(STRIP, height - row))
                dst.write(vrt.read(window=window), window=window)
    warped.replace(path)


def _write_on_ortho_grid(ortho: Path, paths: dict[str, Path]) -> None:
    """The four products on the orthophoto's grid (the DTM at ``DTM_RESOLUTION``)."""
    with rasterio.open(ortho) as src:
        profile = {
            key: value
            for key, value in src.profile.items()
            if key in ("driver", "width", "height", "crs", "transform", "compress", "tiled", "blockxsize", "blockysize")
        }
        transform: Affine = src.transform
        left, top = transform.c, transform.f
        res = transform.a
        _write_dtm(paths["DTM"], src, left, top)
        with (
            rasterio.open(paths["RVB"], "w", count=3, dtype="uint8", **profile) as rvb,
            rasterio.open(paths["IRC"], "w", count=3, dtype="uint8", **profile) as irc,
            rasterio.open(paths["DSM"], "w", count=1, dtype="float32", **profile) as dsm,
        ):
            rvb.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
            irc.colorinterp = (ColorInterp.undefined, ColorInterp.undefined, ColorInterp.undefined)
            dsm.units = ("metre",)
            x = left + (np.arange(src.width) + 0.5) * res
            for row in range(0, src.height, STRIP):
                window = Window(0, row, src.width, min(STRIP, src.height - row))
                bands = src.read(window=window)
                rvb.write(bands[:3], window=window)
                irc.write(bands[[b - 1 for b in IRC_BANDS]], window=window)
                y = top - (np.arange(row, row + window.height) + 0.5) * res
                ground = terrain(x[None, :], y[:, None], left, top)
                dsm.write((ground + bands[4].astype(np.float32) * np.float32(ELEVATION_STEP))[None], window=window)


def _write_dtm(path: Path, src: rasterio.io.DatasetReader, left: float, top: float) -> None:
    """The terrain at ``DTM_RESOLUTION`` over ``src``'s footprint and ``DTM_MARGIN`` pixels around it."""
    right, bottom = src.bounds.right, src.bounds.bottom
    origin_x, origin_y = left - DTM_MARGIN * DTM_RESOLUTION, top + DTM_MARGIN * DTM_RESOLUTION
    width = int(np.ceil((right - left) / DTM_RESOLUTION)) + 2 * DTM_MARGIN
    height = int(np.ceil((top - bottom) / DTM_RESOLUTION)) + 2 * DTM_MARGIN
    x = origin_x + (np.arange(width) + 0.5) * DTM_RESOLUTION
    y = origin_y - (np.arange(height) + 0.5) * DTM_RESOLUTION
    transform = Affine(DTM_RESOLUTION, 0.0, origin_x, 0.0, -DTM_RESOLUTION, origin_y)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="float32",
        crs=src.crs,
        transform=transform,
        compress="lzw",
    ) as dst:
        dst.units = ("metre",)
        dst.write(terrain(x[None, :], y[:, None], left, top)[None])
