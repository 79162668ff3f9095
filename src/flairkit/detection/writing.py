"""Writing detection outputs: the raw block file, the class map GeoTIFF, scores, COG and QGIS style.

The map is computed into ``blocks.raw`` (band-sequential uint8, one file for every rank, blocks written in
place) and turned into GeoTIFFs in a single streaming pass once every block is done: tiled 512 x 512,
LZW, BIGTIFF when needed (as IGN's flair-detect), the input's CRS and transform, nodata declared, the
FLAIR colour table embedded and a ``.qml`` style written beside. GDAL's cache is bounded so that memory
does not grow with the raster.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from flairkit.data.scenes import InputRaster, Span
from flairkit.detection.tiling import windows
from flairkit.nomenclature import Nomenclature

OUTPUT_TILE = 512
"""Internal tile side of every GeoTIFF written (as flair-detect's default)."""
COLUMN_CHUNK = 8 * OUTPUT_TILE
"""Width of the windows copied from the raw file into a GeoTIFF."""
GDAL_CACHE_BYTES = 32 * 2**20
"""GDAL block cache during detection and its report: bounded so memory stays flat whatever the raster size (GDAL's
default, 5% of the machine's memory, fills up with the blocks of a large raster). It holds the input blocks that
neighbouring reads share along a row of blocks."""
CODE_NODATA = 0
"""Nodata of maps written as FLAIR codes (0 is not a class code)."""
INDEX_NODATA = 255
"""Nodata of maps written as 0-based indices."""


class RawRaster:
    """A band-sequential uint8 file of ``bands`` x ``height`` x ``width``; windows are read and written in place."""

    def __init__(self, path: Path, bands: int, height: int, width: int, create: bool = False):
        self.path = Path(path)
        self.bands, self.height, self.width = bands, height, width
        size = bands * height * width
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self._fd = os.open(self.path, flags, 0o644)
        if create:
            os.ftruncate(self._fd, size)  # sparse: no disk used before blocks land
        else:
            actual = os.fstat(self._fd).st_size
            if actual != size:
                os.close(self._fd)
                raise OSError(f"{self.path} holds {actual} bytes, expected {size}")

    def _offset(self, band: int, row: int, col: int) -> int:
        return (band * self.height + row) * self.width + col

    def write(self, rows: Span, cols: Span, data: np.ndarray) -> None:
        """Write a (bands, rows, cols) uint8 array and push it to disk."""
        full_width = cols.start == 0 and cols.stop == self.width
        for band in range(self.bands):
            plane = np.ascontiguousarray(data[band])
            if full_width:
                os.pwrite(self._fd, plane.tobytes(), self._offset(band, rows.start, 0))
                continue
            for i, row in enumerate(range(rows.start, rows.stop)):
                os.pwrite(self._fd, plane[i].tobytes(), self._offset(band, row, cols.start))
        os.fdatasync(self._fd)

    def read(self, band: int, rows: Span, cols: Span) -> np.ndarray:
        """A (rows, cols) uint8 array of one band."""
        if cols.start == 0 and cols.stop == self.width:
            data = os.pread(self._fd, rows.size * self.width, self._offset(band, rows.start, 0))
            return np.frombuffer(data, dtype=np.uint8).reshape(rows.size, self.width)
        out = np.empty((rows.size, cols.size), dtype=np.uint8)
        for i, row in enumerate(range(rows.start, rows.stop)):
            out[i] = np.frombuffer(os.pread(self._fd, cols.size, self._offset(band, row, cols.start)), dtype=np.uint8)
        return out

    def close(self) -> None:
        os.close(self._fd)


def geotiff_profile(raster: InputRaster, count: int, nodata: int | None) -> dict:
    """Creation profile of an output GeoTIFF on the grid of ``raster``."""
    profile = {
        "driver": "GTiff",
        "width": raster.width,
        "height": raster.height,
        "count": count,
        "dtype": "uint8",
        "crs": raster.crs,
        "transform": raster.transform,
        "tiled": True,
        "blockxsize": OUTPUT_TILE,
        "blockysize": OUTPUT_TILE,
        "compress": "lzw",
        "BIGTIFF": "IF_SAFER",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


def map_values(nomenclature: Nomenclature, codes: bool) -> np.ndarray:
    """256-entry lookup from band-0 targets (255 = missing) to written values (FLAIR codes or indices)."""
    return nomenclature.map_targets(np.arange(256), codes, nodata=CODE_NODATA if codes else INDEX_NODATA)


def legend(nomenclature: Nomenclature, codes: bool) -> list[tuple[int, str, str]]:
    """(value, label, '#rrggbb' colour) of every class that can appear in the map."""
    rows = []
    for target in nomenclature.targets:
        if target.enabled:
            value = int(nomenclature.map_targets(target.index, codes))
            rows.append((value, f"{value} - {target.name}", target.colour.lower()))
    return rows


def colormap(entries: Sequence[tuple[int, str, str]]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: class colours, everything else transparent."""
    table = {value: (0, 0, 0, 0) for value in range(256)}
    for value, _, colour in entries:
        table[value] = (*(int(colour[i : i + 2], 16) for i in (1, 3, 5)), 255)
    return table


def write_class_map(
    raw: RawRaster, path: Path, raster: InputRaster, nomenclature: Nomenclature, codes: bool
) -> np.ndarray:
    """Write band 0 of ``raw`` as the class map GeoTIFF at ``path``; return the pixel count per target (256)."""
    lookup = map_values(nomenclature, codes)
    nodata = CODE_NODATA if codes else INDEX_NODATA
    counts = np.zeros(256, dtype=np.int64)
    with rasterio.open(path, "w", **geotiff_profile(raster, 1, nodata)) as dst:
        dst.write_colormap(1, colormap(legend(nomenclature, codes)))
        dst.update_tags(1, CLASS_VALUES="FLAIR codes" if codes else "0-based class indices")
        for rows, cols in windows(raster.height, raster.width, OUTPUT_TILE, COLUMN_CHUNK):
            targets = raw.read(0, rows, cols)
            counts += np.bincount(targets.reshape(-1), minlength=256)
            dst.write(lookup[targets], 1, window=Window(cols.start, rows.start, cols.size, rows.size))
    return counts


def warp_map(reference: Path, path: Path, grid: Path) -> None:
    """Write the class map ``reference`` again at ``path`` on the grid (CRS, pixel size, extent) of the raster
    ``grid``, by nearest resampling, window by window; pixels outside the reference map are nodata."""
    with rasterio.open(grid) as target, rasterio.open(reference) as src:
        warp = {"crs": target.crs, "transform": target.transform, "width": target.width, "height": target.height}
        profile = {**src.profile, **warp}
        with (
            WarpedVRT(src, resampling=Resampling.nearest, nodata=src.nodata, **warp) as vrt,
            rasterio.open(path, "w", **profile) as dst,
        ):
            dst.write_colormap(1, src.colormap(1))
            dst.update_tags(1, **src.tags(1))
            for rows, cols in windows(target.height, target.width, OUTPUT_TILE, COLUMN_CHUNK):
                window = Window(cols.start, rows.start, cols.size, rows.size)
                dst.write(vrt.read(1, window=window), 1, window=window)


def write_scores(raw: RawRaster, path: Path, raster: InputRaster, descriptions: Sequence[str]) -> None:
    """Write raw bands 1.. (probabilities, confidence) as a GeoTIFF with a mask of the missing pixels."""
    count = raw.bands - 1
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(path, "w", **geotiff_profile(raster, count, None)) as dst,
    ):
        for band, description in enumerate(descriptions, start=1):
            dst.set_band_description(band, description)
        for rows, cols in windows(raster.height, raster.width, OUTPUT_TILE, COLUMN_CHUNK):
            window = Window(cols.start, rows.start, cols.size, rows.size)
            dst.write(np.stack([raw.read(b, rows, cols) for b in range(1, raw.bands)]), window=window)
            valid = raw.read(0, rows, cols) != 255
            dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)


def convert_to_cog(source: Path, destination: Path) -> None:
    """Copy a GeoTIFF as a Cloud Optimized GeoTIFF (LZW, 512 blocks, nearest overviews for classes)."""
    rasterio.shutil.copy(
        source,
        destination,
        driver="COG",
        COMPRESS="LZW",
        BLOCKSIZE=OUTPUT_TILE,
        OVERVIEW_RESAMPLING="NEAREST",
        BIGTIFF="IF_SAFER",
    )


def qml_style(entries: Sequence[tuple[int, str, str]]) -> str:
    """A QGIS paletted style (``.qml``) that draws each class in its FLAIR colour."""
    palette = "\n".join(
        f'        <paletteEntry value={quoteattr(str(value))} label={quoteattr(label)} alpha="255" '
        f"color={quoteattr(colour)}/>"
        for value, label, colour in entries
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28" styleCategories="AllStyleCategories">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <colorPalette>
{palette}
      </colorPalette>
      <colorramp type="randomcolors" name="[source]"/>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""
