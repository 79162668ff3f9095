"""A model input assembled from several rasters (BD ORTHO RVB + IRC, a DSM and a DTM), each warped on the fly onto
one grid, read by windows like a stacked orthophoto.

The assembled scene has the five FLAIR-1 bands (red, green, blue, NIR, elevation; the model's ``data.channels``
select among them). Every source is read through a :class:`~rasterio.vrt.WarpedVRT` on the grid: no temporary copy.
A source may be a folder of tiles of one product (BD ORTHO's 5 km tiles): they are mosaicked by a VRT kept in
memory, and where no tile lies the pixels are missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from flairkit.data.rasters import AERIAL_RESOLUTION
from flairkit.data.scenes import (
    RASTER_SUFFIXES,
    RESOLUTION_TOLERANCE,
    InputRaster,
    Rectangles,
    SceneReader,
    Span,
    covered_pixels,
    vrt_coverage,
    vrt_text_coverage,
)
from flairkit.errors import ConfigError, DataError

KINDS = {"rgb": 3, "nir": 1, "dsm": 1, "dtm": 1}
"""The kinds of source and how many bands each gives."""
KIND_CHANNELS = {"rgb": (1, 2, 3), "nir": (4,), "dsm": (5,), "dtm": (5,)}
"""The FLAIR-1 bands (1-based: R, G, B, NIR, elevation) each kind feeds."""
ELEVATION_STEP = 0.2
"""Metres per unit of FLAIR-1's 8-bit elevation band."""
FEET = {"ft", "foot", "feet", "us-ft", "us survey foot", "ftus"}
HIGHEST_GROUND = 9000.0
"""Metres: a DSM value above this is not an elevation in metres."""
HIGHEST_NDSM_MEDIAN = 30.0
"""Metres: a median DSM - DTM above this means the two are not in the same unit or vertical datum."""
INPUTS_KEY = "detect.inputs (--input)"
ELEVATION_STRIP = 256
"""Rows of DSM and DTM read at a time."""
SAMPLE_SIDE = 512
"""Side in pixels of the central window that the elevation value-range checks read (cheap on any raster)."""


@dataclass(frozen=True)
class Source:
    """One raster of an assembly: its kind, file and the (1-based) bands it gives."""

    kind: str
    path: Path
    bands: tuple[int, ...]
    resampling: Resampling
    coverage: Rectangles | None = None
    """A VRT mosaic's tiles as (column, row, width, height) rectangles of the grid; None: no gaps."""
    mosaic: str | None = None
    """When ``path`` is a folder of tiles: the VRT (XML text, kept in memory) that mosaics them."""

    def open(self) -> rasterio.io.DatasetReader:
        """The source's raster: its file, or the in-memory VRT mosaic of its folder."""
        return rasterio.open(self.mosaic if self.mosaic is not None else self.path)


@dataclass(frozen=True)
class AssembledRaster(InputRaster):
    """An input made of several sources warped onto the grid (``path``: the rgb source, which names the map)."""

    parts: tuple[Source, ...] = ()


def flair1_elevation(dsm: np.ndarray, dtm: np.ndarray) -> np.ndarray:
    """FLAIR-1's 8-bit elevation band from a DSM and a DTM in metres: the height above ground (nDSM = DSM - DTM) in
    0.2 m units, rounded and clipped to 0..255.

    FLAIR #1's fifth band is "Elevation (nDSM)", uint8 at 0.2 m, and IGN's model card of
    rgbie_15cl_resnet34-unet states "elevation information encoded in 8-bit format where each unit represents a
    0.2-meter elevation change".
    """
    height = (dsm.astype(np.float32) - dtm.astype(np.float32)) / ELEVATION_STEP
    return np.clip(np.rint(height), 0, 255).astype(np.uint8)


def parse_sources(
    inputs: Mapping[str, str], channels: Sequence[int], resampling_imagery: str, resampling_elevation: str
) -> tuple[Source, ...]:
    """The sources of ``detect.inputs`` (kind -> ``PATH[:BANDS]``) that ``channels`` need, in FLAIR-1 band order."""
    unknown = sorted(set(inputs) - set(KINDS))
    if unknown:
        raise ConfigError(f"{INPUTS_KEY}: unknown kind(s) {', '.join(unknown)}; use {', '.join(KINDS)}")
    needed = [kind for kind in KINDS if set(KIND_CHANNELS[kind]) & set(channels)]
    missing = [kind for kind in needed if kind not in inputs]
    if missing:
        raise ConfigError(
            f"{INPUTS_KEY}: the model reads data.channels={list(channels)} (1-3 R,G,B, 4 NIR, 5 elevation from DSM "
            f"and DTM) but no {', '.join(missing)} is given; add --input {missing[0]}=FILE"
        )
    unused = [kind for kind in inputs if kind not in needed]
    if unused:
        raise ConfigError(
            f"{INPUTS_KEY}: the model does not read {', '.join(unused)} (data.channels={list(channels)}); remove it"
        )
    sources = []
    for kind in needed:
        text = inputs[kind]
        path, bands = text, tuple(range(1, KINDS[kind] + 1))
        head, sep, tail = text.rpartition(":")
        if sep and tail.replace(",", "").isdigit():
            path, bands = head, tuple(int(b) for b in tail.split(","))
        if len(bands) != KINDS[kind] or min(bands) < 1:
            raise ConfigError(
                f"{INPUTS_KEY}: {kind}={text} selects {len(bands)} band(s) but {kind} needs {KINDS[kind]} "
                f"(1-based), e.g. {kind}={path}:{','.join(str(b) for b in range(1, KINDS[kind] + 1))}"
            )
        method = resampling_imagery if kind in ("rgb", "nir") else resampling_elevation
        sources.append(Source(kind, Path(path), bands, Resampling[method]))
    return tuple(sources)


GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


def folder_mosaic(folder: Path, where: str) -> str:
    """The VRT XML (to keep in memory) mosaicking the raster tiles of ``folder`` (one product, e.g. BD ORTHO's 5 km
    tiles) on the first tile's pixel size; where no tile lies, the mosaic has no data.

    Tiles must share their band count, data type and CRS; DataError naming the folder and the fix otherwise.
    """
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{where}: folder holds no raster ({', '.join(RASTER_SUFFIXES)}); check the path")
    tiles = []
    for file in files:
        try:
            with rasterio.open(file) as src:
                tiles.append(
                    {
                        "file": file,
                        "kind": (src.count, src.dtypes[0]),
                        "crs": src.crs,
                        "bounds": src.bounds,
                        "shape": (src.width, src.height),
                        "res": src.res,
                        "nodata": src.nodata,
                        "bands": tuple(zip(src.colorinterp, src.units, strict=True)),
                    }
                )
        except RasterioError as error:
            raise DataError(f"{where}: cannot open tile {file.name} ({error}); remove it or fix it") from None
    first = tiles[0]
    for tile in tiles[1:]:
        if tile["kind"] != first["kind"]:
            raise DataError(
                f"{where}: tile {tile['file'].name} has {tile['kind'][0]} {tile['kind'][1]} band(s) but "
                f"{first['file'].name} has {first['kind'][0]} {first['kind'][1]}; a folder holds the tiles of one "
                f"product only"
            )
        if tile["crs"] != first["crs"]:
            raise DataError(
                f"{where}: tile {tile['file'].name} is in {tile['crs']} but {first['file'].name} in {first['crs']}; "
                f"a folder holds the tiles of one product in one CRS (reproject them, or give one folder per CRS)"
            )
    dtype, crs, (xres, yres) = first["kind"][1], first["crs"], first["res"]
    if crs is None:
        raise DataError(f"{where}: tile {first['file'].name} has no coordinate reference system; assign one")
    left = min(t["bounds"].left for t in tiles)
    top = max(t["bounds"].top for t in tiles)
    width = math.ceil((max(t["bounds"].right for t in tiles) - left) / xres - 1e-6)
    height = math.ceil((top - min(t["bounds"].bottom for t in tiles)) / yres - 1e-6)
    bands = []
    for band, (interp, unit) in enumerate(first["bands"], start=1):
        lines = [f'<VRTRasterBand dataType="{GDAL_TYPES.get(dtype, "Float64")}" band="{band}">']
        if first["nodata"] is not None:
            lines.append(f"<NoDataValue>{first['nodata']!r}</NoDataValue>")
        lines.append(f"<ColorInterp>{interp.name.capitalize()}</ColorInterp>")
        if unit:
            lines.append(f"<UnitType>{escape(unit)}</UnitType>")
        for tile in tiles:
            bounds, (columns, rows) = tile["bounds"], tile["shape"]
            x, y = (bounds.left - left) / xres, (top - bounds.top) / yres
            w, h = (bounds.right - bounds.left) / xres, (bounds.top - bounds.bottom) / yres
            lines.append(
                f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(tile["file"].resolve()))}'
                f'</SourceFilename><SourceBand>{band}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{columns}" '
                f'ySize="{rows}"/><DstRect xOff="{x!r}" yOff="{y!r}" xSize="{w!r}" ySize="{h!r}"/></SimpleSource>'
            )
        bands.append("".join([*lines, "</VRTRasterBand>"]))
    return (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{escape(crs.to_wkt())}</SRS>'
        f"<GeoTransform>{left!r}, {xres!r}, 0.0, {top!r}, 0.0, {-yres!r}</GeoTransform>{''.join(bands)}</VRTDataset>"
    )


def _grid(first: rasterio.io.DatasetReader, crs: CRS, resolution: float) -> tuple[Affine, int, int]:
    """The grid over ``first``'s footprint in ``crs`` with square ``resolution`` pixels (on ``first``'s origin when
    it is in ``crs``)."""
    left, bottom, right, top = first.bounds
    if first.crs != crs:
        left, bottom, right, top = transform_bounds(first.crs, crs, left, bottom, right, top)
    width = max(1, math.ceil((right - left) / resolution - 1e-6))
    height = max(1, math.ceil((top - bottom) / resolution - 1e-6))
    return Affine(resolution, 0, left, 0, -resolution, top), width, height


def _centre(width: int, height: int, side: int = SAMPLE_SIDE) -> Window:
    """The central window (at most ``side`` px square) where the value-range checks look."""
    w, h = min(width, side), min(height, side)
    return Window((width - w) // 2, (height - h) // 2, w, h)


def _check_source(source: Source, src: rasterio.io.DatasetReader, where: str, resample: bool, grid_res: float) -> None:
    """The contract checks of one source (bands, type, colours, pixel size, elevation units)."""
    if src.crs is None:
        raise DataError(f"{where}: has no coordinate reference system; assign one (gdal_edit.py -a_srs EPSG:2154)")
    if max(source.bands) > src.count:
        raise DataError(
            f"{where}: has {src.count} band(s) but {source.kind} needs {KINDS[source.kind]} "
            f"(bands {list(source.bands)}); give the right product or select bands with {source.kind}=FILE:BANDS"
        )
    if source.kind in ("rgb", "nir"):
        wrong = sorted({src.dtypes[b - 1] for b in source.bands} - {"uint8"})
        if wrong:
            raise DataError(
                f"{where}: bands are {', '.join(wrong)} but FLAIR models expect 8-bit imagery; "
                f"convert it (gdal_translate -ot Byte -scale ...)"
            )
        x, y = abs(src.transform.a), abs(src.transform.e)
        other = src.crs.is_geographic or any(abs(r - grid_res) > RESOLUTION_TOLERANCE * grid_res for r in (x, y))
        if other and not resample:
            raise DataError(
                f"{where}: pixels are {x:g} x {y:g} ({src.crs}) but the model's grid is {grid_res:g} m; "
                f"pass --allow-resample (detect.allow_resample=true) to warp it, or set detect.resolution"
            )
    if source.kind == "rgb":
        order = tuple(src.colorinterp[b - 1] for b in source.bands)
        if order == (ColorInterp.blue, ColorInterp.green, ColorInterp.red):
            swapped = ",".join(str(b) for b in reversed(source.bands))
            raise DataError(
                f"{where}: its bands are blue, green, red (colour interpretation) but rgb needs red, green, blue; "
                f"give rgb={source.path}:{swapped}"
            )
    if source.kind in ("dsm", "dtm"):
        unit = (src.units[source.bands[0] - 1] or "").strip().lower()
        if unit in FEET:
            raise DataError(
                f"{where}: elevation is in {unit} (raster units) but metres are needed; convert it "
                f"(gdal_calc.py -A {source.path.name} --calc='A*0.3048' --outfile ...)"
            )
        sample = src.read(source.bands[0], window=_centre(src.width, src.height), masked=True)
        top = float(sample.max()) if sample.count() else 0.0
        if top > HIGHEST_GROUND:
            raise DataError(
                f"{where}: values reach {top:g}, higher than any ground in metres; if it is in feet convert it "
                f"(gdal_calc.py --calc='A*0.3048'), or declare its units (gdal_edit.py -units metre)"
            )


def _grid_coverage(
    src: rasterio.io.DatasetReader, source: Source, crs: CRS, transform: Affine, width: int, height: int
) -> Rectangles | None:
    """The rectangles of the grid (a pixel counts when its centre is inside) that the tiles of a VRT mosaic cover."""
    if source.mosaic is not None:
        rectangles = vrt_text_coverage(source.mosaic, source.bands, src.width, src.height)
    else:
        rectangles = vrt_coverage(Path(src.name), source.bands, src.width, src.height)
    if rectangles is None:
        return None
    res, gx, gy = transform.a, transform.c, transform.f
    found = []
    for col, row, w, h in rectangles:
        left, top = src.transform @ (col, row)
        right, bottom = src.transform @ (col + w, row + h)
        if src.crs != crs:
            left, bottom, right, top = transform_bounds(src.crs, crs, left, bottom, right, top)
        col0, col1 = (min(max(math.ceil((x - gx) / res - 0.5), 0), width) for x in (left, right))
        row0, row1 = (min(max(math.ceil((gy - y) / res - 0.5), 0), height) for y in (top, bottom))
        if col0 < col1 and row0 < row1:
            found.append((col0, row0, col1 - col0, row1 - row0))
    return tuple(found)


def _check_elevation_pair(dsm: WarpedVRT, dtm: WarpedVRT, where: str) -> None:
    """A value-range check that DSM and DTM agree (same unit, same datum): their median difference is small."""
    window = _centre(dsm.width, dsm.height)
    a, b = dsm.read(1, window=window, masked=True), dtm.read(1, window=window, masked=True)
    height = (a.astype(np.float32) - b.astype(np.float32)).compressed()
    if height.size and float(np.median(height)) > HIGHEST_NDSM_MEDIAN:
        raise DataError(
            f"{where}: the median height of the DSM above the DTM is {float(np.median(height)):.0f} m; one of them "
            f"is probably in feet or on another vertical datum - convert it to metres (gdal_calc.py --calc='A*0.3048')"
        )


def inspect_assembly(
    inputs: Mapping[str, str],
    channels: Sequence[int],
    *,
    resolution: float | None = None,
    crs: str | None = None,
    allow_resample: bool = False,
    resampling_imagery: str = "bilinear",
    resampling_elevation: str = "bilinear",
    all_zero_is_nodata: bool = True,
) -> AssembledRaster:
    """Check the sources of ``inputs`` (kind -> ``PATH[:BANDS]``) against the model's ``channels`` and build the
    grid they are warped onto: ``crs`` (default the rgb source's), ``resolution`` (default 0.2 m) over the rgb
    source's footprint. Raises ConfigError/DataError naming the source and the fix."""
    sources = parse_sources(inputs, channels, resampling_imagery, resampling_elevation)
    grid_res = AERIAL_RESOLUTION if resolution is None else resolution
    resample = allow_resample or resolution is not None or crs is not None
    opened = []
    try:
        checked = []
        for source in sources:
            where = f"{source.kind}={source.path}"
            if source.path.is_dir():
                source = replace(source, mosaic=folder_mosaic(source.path, where))
            elif not source.path.is_file():
                raise DataError(f"{where}: no such file or folder; check the path")
            try:
                opened.append(source.open())
            except RasterioError as error:
                raise DataError(f"{where}: cannot open raster ({error}); give a GeoTIFF, JP2 or VRT") from None
            _check_source(source, opened[-1], where, resample, grid_res)
            checked.append(source)
        sources = tuple(checked)
        first = opened[0]
        try:
            grid_crs = first.crs if crs is None else CRS.from_user_input(crs)
        except CRSError as error:
            raise ConfigError(f"detect.crs={crs!r} is not a CRS ({error}); give e.g. EPSG:2154") from None
        if grid_crs.is_geographic:
            raise ConfigError(
                f"the grid CRS {grid_crs} (detect.crs, default the rgb source's) is in degrees; "
                f"set detect.crs to a projected CRS such as EPSG:2154"
            )
        transform, width, height = _grid(first, grid_crs, grid_res)
        sources = tuple(
            replace(s, coverage=_grid_coverage(src, s, grid_crs, transform, width, height))
            if src.driver == "VRT"
            else s
            for s, src in zip(sources, opened, strict=True)
        )
        kinds = {s.kind: i for i, s in enumerate(sources)}
        if "dsm" in kinds:
            warp = {"crs": grid_crs, "transform": transform, "width": width, "height": height}
            with WarpedVRT(opened[kinds["dsm"]], **warp) as dsm, WarpedVRT(opened[kinds["dtm"]], **warp) as dtm:
                _check_elevation_pair(dsm, dtm, f"dsm={sources[kinds['dsm']].path}, dtm={sources[kinds['dtm']].path}")
        files = tuple(
            dict.fromkeys(Path(f) for src, s in zip(opened, sources, strict=True) for f in [s.path, *src.files])
        )
        imagery_nodata = first.nodata
    finally:
        for src in opened:
            src.close()
    implied = all_zero_is_nodata and imagery_nodata is None
    return AssembledRaster(
        path=sources[0].path,
        width=width,
        height=height,
        count=5,
        crs=grid_crs,
        transform=transform,
        nodata=0 if implied else imagery_nodata,
        dataset_mask=True,
        implied_nodata=implied,
        sources=files,
        parts=sources,
    )


def grid_offset(src: rasterio.io.DatasetReader, raster: InputRaster) -> tuple[int, int] | None:
    """(column, row) of the grid's origin in ``src``'s pixels when ``src`` lies on the grid of ``raster`` (same CRS and
    pixel size, a whole number of pixels apart), else None."""
    grid, own = raster.transform, src.transform
    if src.crs != raster.crs or own.b or own.d or grid.b or grid.d:
        return None
    if abs(own.a - grid.a) > 1e-9 * abs(grid.a) or abs(own.e - grid.e) > 1e-9 * abs(grid.e):
        return None
    col, row = (grid.c - own.c) / own.a, (grid.f - own.f) / own.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(col), round(row)


class _OnGrid:
    """A source that lies on the grid, read directly with the reads and masks of a :class:`WarpedVRT` onto the grid
    (0 and masked outside the source): warping it would give the same pixels, tens of times slower."""

    def __init__(self, src: rasterio.io.DatasetReader, offset: tuple[int, int]):
        self._src = src
        self._col, self._row = offset

    def _inside(self, window: Window) -> tuple[Window, tuple[slice, slice]] | None:
        """The part of ``window`` (grid pixels) inside the source: as a source window, and where it goes."""
        col0, row0 = int(window.col_off) + self._col, int(window.row_off) + self._row
        rows = Span(row0, row0 + int(window.height)).intersect(Span(0, self._src.height))
        cols = Span(col0, col0 + int(window.width)).intersect(Span(0, self._src.width))
        if rows is None or cols is None:
            return None
        place = (slice(rows.start - row0, rows.stop - row0), slice(cols.start - col0, cols.stop - col0))
        return Window(cols.start, rows.start, cols.size, rows.size), place

    def read(self, bands: list[int], window: Window) -> np.ndarray:
        out = np.zeros((len(bands), int(window.height), int(window.width)), dtype=self._src.dtypes[bands[0] - 1])
        inside = self._inside(window)
        if inside is not None:
            out[:, inside[1][0], inside[1][1]] = self._src.read(bands, window=inside[0])
        return out

    def dataset_mask(self, window: Window) -> np.ndarray:
        out = np.zeros((int(window.height), int(window.width)), dtype=np.uint8)
        inside = self._inside(window)
        if inside is not None:
            out[inside[1]] = self._src.dataset_mask(window=inside[0])
        return out

    def close(self) -> None:
        """The source itself is closed by its owner."""


class AssembledScene(SceneReader):
    """Reads rectangles of the selected FLAIR-1 bands of an :class:`AssembledRaster`, each source warped on the fly
    (read directly when it lies on the grid already).

    Not thread-safe: each thread opens its own reader.
    """

    def __init__(self, raster: AssembledRaster, channels: Sequence[int]):
        self.raster = raster
        self.channels = list(channels)
        self._coverage = None
        self._files: list[rasterio.io.DatasetReader] = []
        self._warped: dict[str, WarpedVRT | _OnGrid] = {}
        try:
            for source in raster.parts:
                src = source.open()
                self._files.append(src)
                offset = grid_offset(src, raster)
                self._warped[source.kind] = (
                    _OnGrid(src, offset)
                    if offset is not None
                    else WarpedVRT(
                        src,
                        crs=raster.crs,
                        transform=raster.transform,
                        width=raster.width,
                        height=raster.height,
                        resampling=source.resampling,
                        add_alpha=src.nodata is None,
                    )
                )
        except RasterioError as error:
            self.close()
            raise DataError(f"{raster.path}: cannot open a source of the assembly ({error})") from None

    def close(self) -> None:
        for item in [*self._warped.values(), *self._files]:
            item.close()

    def _band(self, kind: str, window: Window) -> np.ndarray:
        source = next(s for s in self.raster.parts if s.kind == kind)
        try:
            return self._warped[kind].read(list(source.bands), window=window)
        except RasterioError as error:
            raise DataError(
                f"{kind}={source.path}: read failed in rows {window.row_off}..{window.row_off + window.height}, "
                f"columns {window.col_off}..{window.col_off + window.width} ({error}); the file may be corrupt"
            ) from None

    def _read(self, rows: Span, cols: Span) -> np.ndarray:
        window = Window(cols.start, rows.start, cols.size, rows.size)
        out = np.empty((len(self.channels), rows.size, cols.size), dtype=np.uint8)
        where = {channel: i for i, channel in enumerate(self.channels)}
        if {1, 2, 3} & set(self.channels):
            for channel, band in zip((1, 2, 3), self._band("rgb", window), strict=True):
                if channel in where:
                    out[where[channel]] = band
        if 4 in where:
            out[where[4]] = self._band("nir", window)[0]
        if 5 in where:
            # By strips: float32 DSM and DTM of a whole block would weigh 8 bytes a pixel more.
            for top in range(0, rows.size, ELEVATION_STRIP):
                part = Window(cols.start, rows.start + top, cols.size, min(ELEVATION_STRIP, rows.size - top))
                elevation = flair1_elevation(self._band("dsm", part)[0], self._band("dtm", part)[0])
                out[where[5], top : top + int(part.height)] = elevation
        return out

    def valid(self, rows: Span, cols: Span, data: np.ndarray) -> np.ndarray | None:
        """Where every source covers the pixels of ``rows`` x ``cols`` with data (and the imagery is not nodata)."""
        window = Window(cols.start, rows.start, cols.size, rows.size)
        valid = np.ones((rows.size, cols.size), dtype=bool)
        for source in self.raster.parts:
            valid &= self._warped[source.kind].dataset_mask(window=window) > 0
            if source.coverage is not None:
                valid &= covered_pixels(np.array(source.coverage, dtype=np.int64).reshape(-1, 4), rows, cols)
        imagery = [i for i, c in enumerate(self.channels) if c <= 4]
        if self.raster.nodata is not None and imagery:
            valid &= np.any(data[imagery] != self.raster.nodata, axis=0)
        return valid


def open_scene(raster: InputRaster, channels: Sequence[int]) -> SceneReader:
    """A windowed reader of ``raster``: an :class:`AssembledScene` for an assembly, else a :class:`SceneReader`."""
    if isinstance(raster, AssembledRaster):
        return AssembledScene(raster, channels)
    return SceneReader(raster, channels)
