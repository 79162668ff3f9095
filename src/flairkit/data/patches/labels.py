"""Labels for ``flair data patches``: a label raster, or polygons with a class attribute, read on a patch's grid.

Each label value (a raster value, or a polygon's class attribute) becomes a mask value of the nomenclature through
a mapping table (a ``value,class`` CSV, or a YAML/JSON mapping: class codes or names, empty for unlabelled), or as
it is once its origin is known (labels that start at 0 are shifted, see :func:`flairkit.nomenclature.label_origin`).
Pixels with no label become the nomenclature's ignore value, never a class. Labels in another CRS than the imagery
are reprojected onto the imagery grid (nearest neighbour for rasters). Polygons are rasterised on the patch's grid
(pixel centres inside); invalid ones are repaired with shapely's ``make_valid``; where polygons of different
classes overlap, the smallest polygon wins (a building drawn inside a parcel keeps its class).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
import yaml
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.features import rasterize
from rasterio.transform import Affine
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from flairkit.data.patches.vectors import VECTOR_SUFFIXES, file_crs, note, read_polygons, reproject_geometries, some_ids
from flairkit.errors import ConfigError, DataError
from flairkit.nomenclature import Nomenclature, label_origin

RASTER_DTYPES = ("uint8", "int8", "uint16", "int16", "int32")
UNLABELLED_CLASSES = ("", "ignore", "unlabelled", "unlabeled")
"""What a mapping table gives for values that stay unlabelled (or YAML null)."""
_OUTSIDE = np.iinfo(np.int32).min
"""Fills the pixels a label raster does not cover while it is read."""
_ALIGNED_TOLERANCE = 1e-6
Bounds = tuple[float, float, float, float]


def label_key(value: Any) -> str:
    """A label value as the text a mapping table is keyed by: 3, 3.0 and "3" are one key."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _class_cell(value: Any) -> int | str | None:
    """A mapping table's class: a code (int), a class name, or None (unlabelled)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.casefold() in UNLABELLED_CLASSES:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def read_mapping_table(path: Path) -> dict[str, int | str | None]:
    """Read a mapping table: label value (as :func:`label_key`) -> class code, class name, or None (unlabelled).

    A ``.csv`` has a header line and two columns (label value, class); a ``.yaml``/``.yml``/``.json`` file holds
    one mapping of label values to classes.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: mapping table not found; give a CSV (value,class) or YAML mapping of label values")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the mapping table ({error}); it must be a UTF-8 text file") from None
    table: dict[str, int | str | None] = {}
    if path.suffix.lower() == ".csv":
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
        for line, row in enumerate(rows[1:], start=2):
            if len(row) != 2:
                raise DataError(f"{path}, line {line}: expected 'value,class', got {row!r}; two columns per line")
            table[label_key(row[0])] = _class_cell(row[1])
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise DataError(f"{path}: not valid YAML/JSON ({' '.join(str(error).split())}); fix the table") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a mapping of label values to classes, e.g. {{Bati: building, 12: 3}}")
        table = {label_key(key): _class_cell(value) for key, value in data.items()}
    if not table:
        raise DataError(f"{path}: the mapping table is empty; give one label value -> class per line")
    return table


def _natural(key: str) -> tuple[int, float, str]:
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


def value_map(
    found: Iterable[Any],
    nomenclature: Nomenclature,
    source: str,
    mapping: Path | None,
    start: int | None,
    notes: list[str],
) -> dict[str, int | None]:
    """Label value (as :func:`label_key`) -> mask value, or None for unlabelled, for every value ``found``.

    With a ``mapping`` table every value must be listed; without one, values must be whole numbers and are read
    as class values, shifted when the labels start at 0 (or ``start`` says so).
    """
    keys = sorted({label_key(v) for v in found}, key=_natural)
    if mapping is not None:
        if start is not None:
            raise ConfigError("labels_start_at (--labels-start-at) applies to labels read without a mapping table")
        table = read_mapping_table(mapping)
        missing = [key for key in keys if key not in table]
        if missing:
            shown = ", ".join(repr(k) for k in missing[:20]) + (
                f" (and {len(missing) - 20} more)" if len(missing) > 20 else ""
            )
            raise DataError(
                f"{source}: label value(s) {shown} are missing from the mapping table {mapping}; add a line for each "
                "(a value mapped to nothing stays unlabelled)"
            )
        resolved: dict[str, int | None] = {}
        for key in keys:
            wanted = table[key]
            resolved[key] = None if wanted is None else nomenclature.value_of(wanted)
            if wanted is not None and resolved[key] is None:
                raise DataError(
                    f"{mapping}: value {key!r} maps to {wanted!r}, no class of nomenclature {nomenclature.name!r} "
                    f"(codes {', '.join(str(t.code) for t in nomenclature.targets)}); give a class code or name"
                )
        notes.append(f"{source}: label values mapped to classes by {mapping}")
        return resolved
    numbers = []
    for key in keys:
        try:
            numbers.append(int(key))
        except ValueError:
            raise DataError(
                f"{source}: label value {key!r} is not a class code; give a mapping table (--mapping) from label "
                "values to class codes or names"
            ) from None
    origin = label_origin(numbers, nomenclature, source, start)
    notes.append(origin.note)
    return {str(v): None if v in origin.unlabelled else v + origin.shift for v in numbers}


class RasterLabels:
    """A single-band integer label raster, read on any patch grid (reprojected when the grids differ)."""

    def __init__(
        self, path: Path, nomenclature: Nomenclature, mapping: Path | None, start: int | None, notes: list[str]
    ):
        self.path = Path(path)
        self.notes = notes
        self.fill = nomenclature.ignore_value
        try:
            self._src = rasterio.open(self.path)
        except RasterioError as error:
            raise DataError(
                f"{self.path}: cannot open the labels ({error}); give a label raster (GeoTIFF) or polygons "
                f"({', '.join(VECTOR_SUFFIXES)})"
            ) from None
        src = self._src
        if src.count != 1:
            raise DataError(f"{self.path}: has {src.count} bands; a label raster has one band of class values")
        if src.dtypes[0] not in RASTER_DTYPES:
            raise DataError(
                f"{self.path}: values are {src.dtypes[0]}; labels must be whole class values "
                f"({', '.join(RASTER_DTYPES)}): convert with gdal_translate -ot Byte"
            )
        self.nodata = None if src.nodata is None else int(src.nodata)
        found: set[int] = set()
        for _, window in src.block_windows(1):
            found.update(np.unique(src.read(1, window=window)).tolist())
        found.discard(self.nodata)
        if not found:
            raise DataError(f"{self.path}: holds no label (every pixel is its nodata value {self.nodata})")
        self._map = value_map(found, nomenclature, str(self.path), mapping, start, notes)
        self._crs: dict[str, CRS] = {}

    def close(self) -> None:
        self._src.close()

    def _source_crs(self, image_crs: CRS) -> CRS:
        key = image_crs.to_wkt()
        if key not in self._crs:
            self._crs[key] = file_crs(self._src.crs, self.path, image_crs, self.notes, "labels")
        return self._crs[key]

    def bounds_in(self, crs: CRS) -> Bounds:
        """The labels' bounds in ``crs``."""
        source = self._source_crs(crs)
        bounds = tuple(self._src.bounds)
        return bounds if source == crs else transform_bounds(source, crs, *bounds)

    def _offsets(self, transform: Affine) -> tuple[int, int] | None:
        """(row, col) of ``transform``'s origin in the label grid when both grids coincide, else None."""
        own = self._src.transform
        scale = (own.a, own.b, own.d, own.e), (transform.a, transform.b, transform.d, transform.e)
        if not np.allclose(*scale, rtol=0, atol=_ALIGNED_TOLERANCE * abs(own.a)):
            return None
        col, row = ~own @ (transform.c, transform.f)
        if abs(col - round(col)) > _ALIGNED_TOLERANCE or abs(row - round(row)) > _ALIGNED_TOLERANCE:
            return None
        return round(row), round(col)

    def read(self, crs: CRS, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
        """The uint8 mask values of the pixels of the grid (``crs``, ``transform``, ``shape``)."""
        source = self._source_crs(crs)
        raw = np.full(shape, _OUTSIDE, dtype=np.int32)
        offsets = self._offsets(transform) if source == crs else None
        if offsets is None:
            if source == crs:
                note(
                    self.notes,
                    f"{self.path}: the label grid differs from the imagery grid: resampled onto it (nearest)",
                )
            reproject(
                rasterio.band(self._src, 1),
                raw,
                src_transform=self._src.transform,
                src_crs=source,
                src_nodata=self.nodata,
                dst_transform=transform,
                dst_crs=crs,
                dst_nodata=_OUTSIDE,
                resampling=Resampling.nearest,
            )
        else:
            row, col = offsets
            rows = slice(max(row, 0), min(row + shape[0], self._src.height))
            cols = slice(max(col, 0), min(col + shape[1], self._src.width))
            if rows.start < rows.stop and cols.start < cols.stop:
                window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
                raw[rows.start - row : rows.stop - row, cols.start - col : cols.stop - col] = self._src.read(
                    1, window=window
                )
        values, inverse = np.unique(raw, return_inverse=True)
        lookup = np.array([self._mask_value(int(v)) for v in values], dtype=np.uint8)
        return lookup[inverse].reshape(shape)

    def _mask_value(self, value: int) -> int:
        mask_value = None if value in (_OUTSIDE, self.nodata) else self._map.get(str(value))
        return self.fill if mask_value is None else mask_value


class VectorLabels:
    """Polygons with a class attribute, rasterised on any patch grid; the smallest polygon wins where they overlap."""

    def __init__(
        self,
        path: Path,
        nomenclature: Nomenclature,
        *,
        class_field: str | None,
        layer: str | None,
        mapping: Path | None,
        start: int | None,
        background: int | str | None,
        notes: list[str],
    ):
        self.path = Path(path)
        self.notes = notes
        if class_field is None:
            raise ConfigError(f"{self.path}: polygons need class_field (--class-field), the attribute with the class")
        polygons = read_polygons(self.path, layer, {class_field: "class field"})
        notes.extend(polygons.notes)
        self._file_crs = polygons.crs
        values = [value for (value,) in polygons.values]
        nulls = [fid for fid, value in zip(polygons.ids, values, strict=True) if value is None]
        if nulls:
            notes.append(
                f"{self.path}: {len(nulls)} polygon(s) with no {class_field!r} value left unlabelled "
                f"(features {some_ids(nulls)})"
            )
        source = f"{self.path} ({class_field})"
        mapped = value_map([v for v in values if v is not None], nomenclature, source, mapping, start, notes)
        kept = [
            (fid, geometry, mapped[label_key(value)])
            for fid, geometry, value in zip(polygons.ids, polygons.geometries, values, strict=True)
            if value is not None and mapped[label_key(value)] is not None
        ]
        if not kept:
            raise DataError(f"{self.path}: every polygon is unlabelled by the mapping; map some values to classes")
        # Largest first: rasterising burns later shapes over earlier ones, so the smallest polygon wins.
        kept.sort(key=lambda item: -item[1].area)
        self._ids = [fid for fid, _, _ in kept]
        self._geometries = np.array([geometry for _, geometry, _ in kept], dtype=object)
        self._values = np.array([value for _, _, value in kept], dtype=np.uint8)
        self.fill = nomenclature.ignore_value if background is None else self._background(nomenclature, background)
        self._count_overlaps()
        self._grids: dict[str, tuple[np.ndarray, shapely.STRtree]] = {}

    def _background(self, nomenclature: Nomenclature, background: int | str) -> int:
        wanted = _class_cell(background)
        value = None if wanted is None else nomenclature.value_of(wanted)
        if value is None:
            raise ConfigError(
                f"background (--background) {background!r} is no class of nomenclature {nomenclature.name!r}; "
                "give a class code or name"
            )
        self.notes.append(f"{self.path}: pixels that no polygon covers are class {background!r}")
        return value

    def _count_overlaps(self) -> None:
        """Say how many pairs of polygons of different classes overlap, and which one wins."""
        first, second = shapely.STRtree(self._geometries).query(self._geometries, predicate="intersects")
        pairs = (first < second) & (self._values[first] != self._values[second])
        first, second = first[pairs], second[pairs]
        overlapping = shapely.area(shapely.intersection(self._geometries[first], self._geometries[second])) > 0
        if overlapping.any():
            pairs_shown = zip(first[overlapping], second[overlapping], strict=True)
            examples = [f"{self._ids[a]}/{self._ids[b]}" for a, b in pairs_shown]
            self.notes.append(
                f"{self.path}: {int(overlapping.sum())} pair(s) of polygons of different classes overlap: the "
                f"smallest polygon wins (features {some_ids(examples, 5)})"
            )

    def close(self) -> None:
        """Nothing to release: the polygons are in memory."""

    def _in(self, crs: CRS) -> tuple[np.ndarray, shapely.STRtree]:
        key = crs.to_wkt()
        if key not in self._grids:
            source = file_crs(self._file_crs, self.path, crs, self.notes, "labels")
            geometries = reproject_geometries(self._geometries, source, crs)
            self._grids[key] = (geometries, shapely.STRtree(geometries))
        return self._grids[key]

    def bounds_in(self, crs: CRS) -> Bounds:
        """The polygons' bounds in ``crs``."""
        geometries, _ = self._in(crs)
        return tuple(shapely.total_bounds(geometries).tolist())

    def read(self, crs: CRS, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
        """The uint8 mask values of the pixels of the grid (``crs``, ``transform``, ``shape``): pixel centres inside."""
        geometries, tree = self._in(crs)
        left, top = transform @ (0, 0)
        right, bottom = transform @ (shape[1], shape[0])
        hits = np.sort(tree.query(shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))))
        if not hits.size:
            return np.full(shape, self.fill, dtype=np.uint8)
        return rasterize(
            zip(geometries[hits], self._values[hits].tolist(), strict=True),
            out_shape=shape,
            transform=transform,
            fill=self.fill,
            dtype=np.uint8,
        )


Labels = RasterLabels | VectorLabels


def open_labels(
    path: Path,
    nomenclature: Nomenclature,
    *,
    class_field: str | None = None,
    layer: str | None = None,
    mapping: Path | None = None,
    start: int | None = None,
    background: int | str | None = None,
    notes: list[str],
) -> Labels:
    """The labels at ``path``: polygons when its extension is a vector format's, else a label raster."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: label file not found; give a label raster or polygons ({', '.join(VECTOR_SUFFIXES)})")
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return VectorLabels(
            path,
            nomenclature,
            class_field=class_field,
            layer=layer,
            mapping=mapping,
            start=start,
            background=background,
            notes=notes,
        )
    for value, option in (
        (class_field, "class_field (--class-field)"),
        (layer, "layer (--layer)"),
        (background, "background (--background)"),
    ):
        if value is not None:
            raise ConfigError(f"{path}: {option} applies to polygon labels; a label raster gives every pixel's class")
    return RasterLabels(path, nomenclature, mapping, start, notes)
