"""Areas for ``flair data patches``: the places that become zone folders and that a split never cuts through.

Areas are the polygons of a vector file named by one of its fields (features that share a name form one area),
or the cells of a regular grid of N km. A patch belongs to the area that holds its centre. Splits are drawn by
area: every patch of an area goes to the same split, so that neighbouring patches never leak from train to test.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import shapely
from rasterio.crs import CRS

from flairkit.data.patches.vectors import file_crs, note, read_polygons, reproject_geometries, some_ids
from flairkit.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


def zone_name(index: int, name: str) -> str:
    """The FLAIR zone folder of the ``index``-th area (1-based): ``Z<index>_<letters of its name>``."""
    letters = re.sub(r"[^A-Za-z]", "", name)[:8] or "A"
    return f"Z{index}_{letters}"


class FileAreas:
    """Areas drawn as polygons in a vector file, named by ``field``; ``split_field`` may fix an area's split."""

    def __init__(
        self, path: Path, field: str | None, split_field: str | None, layer: str | None, notes: list[str]
    ) -> None:
        self.path = Path(path)
        self.notes = notes
        if field is None:
            raise ConfigError(f"{self.path}: areas need area_field (--area-field), the attribute naming each area")
        fields = {field: "area name field"}
        if split_field is not None:
            fields[split_field] = "split field"
        polygons = read_polygons(self.path, layer, fields)
        notes.extend(polygons.notes)
        self._crs = polygons.crs
        parts: dict[str, list[shapely.Geometry]] = {}
        self.fixed: dict[str, str] = {}
        unnamed = []
        for fid, geometry, values in zip(polygons.ids, polygons.geometries, polygons.values, strict=True):
            if values[0] is None or not str(values[0]).strip():
                unnamed.append(fid)
                continue
            name = str(values[0]).strip()
            parts.setdefault(name, []).append(geometry)
            if split_field is not None:
                self._fix_split(name, values[1], fid, split_field)
        if unnamed:
            notes.append(
                f"{self.path}: {len(unnamed)} area(s) with no {field!r} left out (features {some_ids(unnamed)})"
            )
        if not parts:
            raise DataError(f"{self.path}: no area has a name in field {field!r}; fill it in")
        self.names = sorted(parts)
        self._geometries = np.array([shapely.union_all(parts[name]) for name in self.names], dtype=object)
        self._trees: dict[str, tuple[np.ndarray, shapely.STRtree]] = {}

    def _fix_split(self, name: str, value: object, fid: str, split_field: str) -> None:
        if value is None or not str(value).strip():
            return
        split = str(value).strip().casefold()
        if split not in SPLITS:
            raise DataError(
                f"{self.path}, feature {fid}: {split_field}={value!r} is not one of {', '.join(SPLITS)}; "
                "fix it or leave it empty to draw the area's split"
            )
        if self.fixed.setdefault(name, split) != split:
            raise DataError(f"{self.path}: area {name!r} is given the splits {self.fixed[name]} and {split}; give one")

    def _in(self, crs: CRS) -> tuple[np.ndarray, shapely.STRtree]:
        key = crs.to_wkt()
        if key not in self._trees:
            source = file_crs(self._crs, self.path, crs, self.notes, "areas")
            geometries = reproject_geometries(self._geometries, source, crs)
            self._trees[key] = (geometries, shapely.STRtree(geometries))
        return self._trees[key]

    def intersects(self, crs: CRS, bounds: tuple[float, float, float, float]) -> bool:
        """Whether an area reaches into ``bounds`` (in ``crs``)."""
        _, tree = self._in(crs)
        return bool(tree.query(shapely.box(*bounds), predicate="intersects").size)

    def names_at(self, crs: CRS, x: np.ndarray, y: np.ndarray) -> list[str | None]:
        """The name of the area holding each point (x, y in ``crs``), None outside every area; the first area in
        name order when areas overlap."""
        _, tree = self._in(crs)
        points, areas = tree.query(shapely.points(x, y), predicate="within")
        found: list[str | None] = [None] * len(x)
        shared = 0
        for point, area in sorted(zip(points.tolist(), areas.tolist(), strict=True)):
            if found[point] is None:
                found[point] = self.names[area]
            else:
                shared += 1
        if shared:
            note(self.notes, f"{self.path}: areas overlap; a patch centre in several areas goes to the first by name")
        return found


class GridAreas:
    """Square cells of ``km`` kilometres on the imagery's projected CRS, aligned on multiples of their side."""

    fixed: Mapping[str, str] = {}

    def __init__(self, km: float) -> None:
        self.km = km

    def _side(self, crs: CRS) -> float:
        if crs.is_geographic:
            raise DataError(
                f"the imagery's CRS {crs.to_string()} is in degrees: grid areas (grid_km) need a projected CRS in "
                "metres; reproject the imagery (gdalwarp -t_srs) or give areas as polygons (--areas)"
            )
        _, metres = crs.linear_units_factor
        return self.km * 1000 / metres

    def intersects(self, crs: CRS, bounds: tuple[float, float, float, float]) -> bool:
        """Grid cells cover everything."""
        self._side(crs)
        return True

    def names_at(self, crs: CRS, x: np.ndarray, y: np.ndarray) -> list[str | None]:
        """``grid_<column>_<row>`` of the cell holding each point (cell column i spans i*side .. (i+1)*side)."""
        side = self._side(crs)
        return [f"grid_{math.floor(a / side)}_{math.floor(b / side)}" for a, b in zip(x, y, strict=True)]


Areas = FileAreas | GridAreas


def split_areas(
    sizes: Mapping[str, int], fractions: Sequence[float], seed: int, fixed: Mapping[str, str]
) -> dict[str, str]:
    """Give each area (name -> patch count) a split so that patch counts follow ``fractions`` (train, val, test).

    Areas of ``fixed`` keep their split. The others, largest first (ties in a random order drawn from ``seed``),
    go to the split furthest below its share; every split with a positive share gets at least one area.
    """
    wanted = {split: fraction for split, fraction in zip(SPLITS, fractions, strict=True)}
    total = sum(sizes.values())
    chosen = {name: fixed[name] for name in sizes if name in fixed}
    free = sorted(set(sizes) - set(chosen))
    random.Random(seed).shuffle(free)
    free.sort(key=lambda name: -sizes[name])
    counts = dict.fromkeys(SPLITS, 0)
    for name, split in chosen.items():
        counts[split] += sizes[name]
    for name in free:
        split = max(SPLITS, key=lambda s: wanted[s] * total - counts[s] if wanted[s] > 0 else -math.inf)
        chosen[name] = split
        counts[split] += sizes[name]
    for split in SPLITS:
        if wanted[split] > 0 and split not in chosen.values():
            donors = [s for s in SPLITS if sum(chosen[n] == s and n not in fixed for n in chosen) >= 2]
            if not donors:
                needed = [s for s in SPLITS if wanted[s] > 0]
                raise DataError(
                    f"{len(sizes)} area(s) with labelled patches cannot fill the {', '.join(needed)} splits (splits "
                    "are drawn by area, never patch by patch); give more areas, a smaller grid_km (--grid-km), or no "
                    f"{split} share (e.g. --split 0.8,0.2,0)"
                )
            donor = max(donors, key=lambda s: counts[s])
            smallest = min((n for n in chosen if chosen[n] == donor and n not in fixed), key=lambda n: sizes[n])
            chosen[smallest] = split
            counts[donor] -= sizes[smallest]
            counts[split] += sizes[smallest]
    return chosen
