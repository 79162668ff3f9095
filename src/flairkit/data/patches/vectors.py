"""Reading polygons for ``flair data patches`` (labels and areas), and the notes that say what was done with them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fiona
import fiona.transform
import numpy as np
import shapely
from fiona.errors import FionaError
from rasterio.crs import CRS
from shapely.geometry import mapping, shape

from flairkit.errors import DataError

VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite")
"""Files read as polygons."""


def note(notes: list[str], text: str) -> None:
    """Add ``text`` to ``notes`` unless it is there already."""
    if text not in notes:
        notes.append(text)


def some_ids(ids: Sequence[str], limit: int = 10) -> str:
    """The first ``limit`` ids of a list, for a message."""
    return ", ".join(ids[:limit]) + (f" (and {len(ids) - limit} more)" if len(ids) > limit else "")


def file_crs(crs: CRS | None, source: Path, image_crs: CRS, notes: list[str], what: str) -> CRS:
    """The CRS to read a file's coordinates in: its own, or the imagery's when it declares none (said in ``notes``)."""
    if crs is None:
        note(notes, f"{source}: declares no CRS: read in the imagery's CRS ({image_crs.to_string()})")
        return image_crs
    if crs != image_crs:
        note(
            notes,
            f"{source}: {what} are in {crs.to_string()}, the imagery in {image_crs.to_string()}: "
            f"reprojected to {image_crs.to_string()}",
        )
    return crs


def reproject_geometries(geometries: np.ndarray, source: CRS, target: CRS) -> np.ndarray:
    """``geometries`` (an object array of shapely geometries) from CRS ``source`` to ``target``."""
    if source == target:
        return geometries
    moved = fiona.transform.transform_geom(source.to_wkt(), target.to_wkt(), [mapping(g) for g in geometries])
    return np.array([shape(g) for g in moved], dtype=object)


def _polygonal(geometry: shapely.Geometry) -> shapely.Geometry | None:
    """The polygons of ``geometry`` (the polygonal parts of a collection); None when it has none."""
    if isinstance(geometry, shapely.Polygon | shapely.MultiPolygon):
        return None if geometry.is_empty else geometry
    parts = [p for p in shapely.get_parts(geometry) if isinstance(p, shapely.Polygon | shapely.MultiPolygon)]
    merged = shapely.union_all(parts) if parts else None
    return None if merged is None or merged.is_empty else merged


@dataclass
class Polygons:
    """The polygons of a vector layer with some of their attributes."""

    path: Path
    ids: list[str]
    """Feature ids, for messages."""
    geometries: list[shapely.Geometry]
    values: list[tuple[Any, ...]]
    """The requested attributes of each feature, in the order asked."""
    crs: CRS | None
    notes: list[str]
    """What was repaired or left out."""


def read_polygons(path: Path, layer: str | None, fields: dict[str, str]) -> Polygons:
    """Read the polygons of a vector file with the attributes ``fields`` (name -> role, e.g. "class field").

    Invalid polygons are repaired with shapely's ``make_valid``; features without a polygon (no geometry, points,
    lines, or nothing left once repaired) are left out. Both are said in the notes.
    """
    path = Path(path)
    try:
        layers = fiona.listlayers(path)
    except (FionaError, OSError) as error:
        raise DataError(f"{path}: cannot open the vector file ({error}); give a GeoPackage or Shapefile") from None
    if layer is not None and layer not in layers:
        raise DataError(f"{path}: has no layer {layer!r}; its layers: {', '.join(layers)}")
    if layer is None and len(layers) > 1:
        raise DataError(f"{path}: holds {len(layers)} layers ({', '.join(layers)}); choose one (--layer)")
    result = Polygons(path, [], [], [], None, [])
    empty, other, repaired, lost = [], [], [], []
    try:
        with fiona.open(path, layer=layer) as src:
            present = list(src.schema["properties"])
            for field, role in fields.items():
                if field not in present:
                    raise DataError(f"{path}: has no field {field!r} ({role}); its fields: {', '.join(present)}")
            result.crs = CRS.from_wkt(src.crs_wkt) if src.crs_wkt else None
            for feature in src:
                fid = str(feature.id)
                geometry = None if feature.geometry is None else shape(feature.geometry)
                if geometry is None or geometry.is_empty:
                    empty.append(fid)
                    continue
                if not isinstance(geometry, shapely.Polygon | shapely.MultiPolygon | shapely.GeometryCollection):
                    other.append(fid)
                    continue
                was_invalid = not geometry.is_valid
                if was_invalid:
                    repaired.append(fid)
                    geometry = shapely.make_valid(geometry)
                polygons = _polygonal(geometry)
                if polygons is None:
                    (lost if was_invalid else other).append(fid)
                    continue
                result.ids.append(fid)
                result.geometries.append(polygons)
                result.values.append(tuple(feature.properties[field] for field in fields))
    except (FionaError, OSError) as error:
        raise DataError(f"{path}: cannot read the features ({error}); check the file") from None
    for ids, what in (
        (repaired, "invalid polygon(s) repaired with shapely make_valid"),
        (lost, "invalid polygon(s) with no area once repaired: left out"),
        (empty, "feature(s) without geometry left out"),
        (other, "point or line feature(s) left out: only polygons are read"),
    ):
        if ids:
            result.notes.append(f"{path}: {len(ids)} {what} (features {some_ids(ids)})")
    if not result.geometries:
        roles = " and ".join(fields.values())
        raise DataError(f"{path}: holds no polygon; give polygons with a {roles}")
    return result
