"""Polygons of the class map, per class, in a GeoPackage.

The map is polygonised window by window (memory bounded by the window); polygons cut by a window seam
are set aside and merged per class at the end, so no polygon is split by the processing grid. Then
polygons smaller than ``min_area`` (m²) are dropped and the rest simplified (``tolerance`` in map units,
topology of each polygon preserved).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import fiona
import numpy as np
import shapely
from rasterio.features import shapes
from rasterio.transform import Affine
from shapely.affinity import affine_transform
from shapely.geometry import mapping, shape

from flairkit.data.scenes import InputRaster
from flairkit.detection.stitching import NODATA_TARGET
from flairkit.detection.tiling import windows
from flairkit.detection.writing import RawRaster
from flairkit.nomenclature import Nomenclature

WINDOW = 4096
"""Side of the windows polygonised at once."""
SCHEMA = {"geometry": "Polygon", "properties": {"value": "int", "class": "str", "area_m2": "float"}}


def _polygons(geometry: shapely.Geometry) -> Iterator[shapely.Polygon]:
    if isinstance(geometry, shapely.Polygon):
        if not geometry.is_empty:
            yield geometry
    elif hasattr(geometry, "geoms"):
        for part in geometry.geoms:
            yield from _polygons(part)


def write_polygons(
    raw: RawRaster,
    path: Path,
    raster: InputRaster,
    nomenclature: Nomenclature,
    codes: bool,
    min_area: float = 0.0,
    tolerance: float = 0.0,
) -> int:
    """Polygonise band 0 of ``raw`` into a GeoPackage layer at ``path``; return the number of polygons."""
    names = {t.index: t.name for t in nomenclature.targets}
    # Polygons are built in pixel coordinates (exact integers, so seam pieces merge exactly) and moved
    # to map coordinates when written.
    a, b, xoff, d, e, yoff = tuple(raster.transform)[:6]
    to_map = [a, b, d, e, xoff, yoff]
    pixel_area = abs(a * e - b * d)
    seams: dict[int, list[shapely.Polygon]] = defaultdict(list)
    written = 0
    with fiona.open(path, "w", driver="GPKG", layer="landcover", schema=SCHEMA, crs_wkt=raster.crs.to_wkt()) as dst:

        def emit(target: int, polygons: list[shapely.Polygon]) -> None:
            nonlocal written
            records = []
            for polygon in polygons:
                area = polygon.area * pixel_area
                if area < min_area:
                    continue
                polygon = affine_transform(polygon, to_map)
                if tolerance > 0:
                    polygon = polygon.simplify(tolerance, preserve_topology=True)
                value = int(nomenclature.map_targets(target, codes))
                properties = {"value": value, "class": names[target], "area_m2": float(area)}
                records.append({"geometry": mapping(polygon), "properties": properties})
            dst.writerecords(records)
            written += len(records)

        for rows, cols in windows(raster.height, raster.width, WINDOW, WINDOW):
            targets = raw.read(0, rows, cols)
            # Window edges that are seams with a neighbouring window (not the raster's border).
            seam_rows = {r for r in (rows.start, rows.stop) if 0 < r < raster.height}
            seam_cols = {c for c in (cols.start, cols.stop) if 0 < c < raster.width}
            whole: dict[int, list[shapely.Polygon]] = defaultdict(list)
            offset = Affine.translation(cols.start, rows.start)
            for geometry, value in shapes(targets, mask=targets != NODATA_TARGET, transform=offset):
                polygon = shape(geometry)
                col0, row0, col1, row1 = polygon.bounds
                cut = bool({row0, row1} & seam_rows or {col0, col1} & seam_cols)
                (seams if cut else whole)[int(value)].append(polygon)
            for target, polygons in whole.items():
                emit(target, polygons)
        for target in sorted(seams):
            emit(target, list(_polygons(shapely.union_all(np.array(seams[target], dtype=object)))))
    return written
