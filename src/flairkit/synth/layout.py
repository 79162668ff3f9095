"""Vector land-cover layout of a synthetic FLAIR area: districts, parcels, lots, roads, buildings, overlays.

Coordinates are local metres, x to the east and y to the south, with (0, 0) at the top-left corner of the
layout. A layout is a list of polygons in drawing order, each with a FLAIR class code and a few attributes
(orientation, centre, size) that the renderer uses for textures; rasterising it gives, per pixel, the id of
the topmost feature (0 = background).

Structure: districts (Voronoi cells of a jittered grid, about 100 m) are urban, agricultural or natural.
Parcels (about 45 m) take classes from their district type. Urban districts hold lots (about 20 m) with a
garden or a yard, a building and sometimes a pool; streets run between urban parcels and roads between
districts. Ponds, snow, greenhouses and solar panels ("other") are overlays. Inside the *focus* (the part
imaged by aerial patches) every land-cover class is placed on purpose, so that each area holds all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from rasterio.features import rasterize
from rasterio.transform import Affine

from flairkit.nomenclature import class_code

URBAN, AGRICULTURAL, NATURAL = 0, 1, 2
DISTRICT_TYPES = (URBAN, AGRICULTURAL, NATURAL)

DISTRICT_SPACING = 100.0
PARCEL_SPACING = 45.0
LOT_SPACING = 24.0
MAIN_ROAD_WIDTH = 7.0
STREET_WIDTH = 5.0

C = {
    name: class_code(name)
    for name in (
        "building",
        "pervious surface",
        "impervious surface",
        "bare soil",
        "water",
        "coniferous",
        "deciduous",
        "brushwood",
        "vineyard",
        "herbaceous vegetation",
        "agricultural land",
        "plowed land",
        "swimming pool",
        "snow",
        "clear cut",
        "mixed",
        "ligneous",
        "greenhouse",
        "other",
    )
}

PARCEL_WEIGHTS: dict[int, dict[str, float]] = {
    URBAN: {"herbaceous vegetation": 0.3, "pervious surface": 0.45, "impervious surface": 0.25},
    AGRICULTURAL: {
        "agricultural land": 0.30,
        "herbaceous vegetation": 0.22,
        "plowed land": 0.15,
        "vineyard": 0.11,
        "bare soil": 0.08,
        "brushwood": 0.06,
        "ligneous": 0.03,
        "deciduous": 0.03,
    },
    NATURAL: {
        "deciduous": 0.28,
        "coniferous": 0.27,
        "brushwood": 0.12,
        "herbaceous vegetation": 0.06,
        "mixed": 0.07,
        "clear cut": 0.05,
        "ligneous": 0.05,
        "water": 0.04,
    },
}
"""Class probabilities of parcels outside the focus, and of focus parcels once the required classes are placed."""

REQUIRED_PARCELS: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    URBAN: ((), ()),
    AGRICULTURAL: (("agricultural land", "herbaceous vegetation", "plowed land", "vineyard", "bare soil"), ()),
    NATURAL: (("coniferous", "deciduous", "brushwood"), ("mixed", "clear cut", "ligneous")),
}
"""Per district type: (enabled, disabled) parcel classes placed on the focus parcels, larger ones first."""


@dataclass
class Layout:
    """Polygons in drawing order with per-feature attributes; feature id i + 1 is ``geoms[i]``, id 0 the background."""

    width: float
    height: float
    geoms: np.ndarray
    codes: np.ndarray
    """(N + 1,) uint8 FLAIR codes; codes[0] is the background class."""
    angles: np.ndarray
    """(N + 1,) orientation (radians) of rows, furrows and roof ridges."""
    centres: np.ndarray
    """(N + 1, 2) feature centre (metres), used for roof shading."""
    half_widths: np.ndarray
    """(N + 1,) half width (metres) of buildings across their ridge."""
    pitched: np.ndarray
    """(N + 1,) bool: a building with a two-sided roof."""
    bounds: np.ndarray
    """(N, 4) minx, miny, maxx, maxy."""
    _shapes: list[dict[str, Any]] | None = field(default=None, repr=False)

    def shapes(self) -> list[dict[str, Any]]:
        """GeoJSON-like mappings of the features (built once; much faster than shapely's one by one)."""
        if self._shapes is None:
            geoms = self.geoms
            simple = (shapely.get_type_id(geoms) == shapely.GeometryType.POLYGON) & (
                shapely.get_num_interior_rings(geoms) == 0
            )
            shapes: list[dict[str, Any]] = [{}] * len(geoms)
            where = np.flatnonzero(simple)
            coords, owner = shapely.get_coordinates(shapely.get_exterior_ring(geoms[where]), return_index=True)
            rings = np.split(coords, np.flatnonzero(np.diff(owner)) + 1) if len(coords) else []
            for i, ring in zip(where, rings, strict=True):
                shapes[i] = {"type": "Polygon", "coordinates": [ring]}
            for i in np.flatnonzero(~simple):
                shapes[i] = geoms[i].__geo_interface__
            self._shapes = shapes
        return self._shapes

    def rasterize(self, x0: float, y0: float, resolution: float, shape: tuple[int, int]) -> np.ndarray:
        """Feature ids (int32) of a grid whose top-left corner is (x0, y0) in layout metres."""
        x1, y1 = x0 + shape[1] * resolution, y0 + shape[0] * resolution
        b = self.bounds
        hit = np.flatnonzero((b[:, 0] < x1) & (b[:, 2] > x0) & (b[:, 1] < y1) & (b[:, 3] > y0))
        if hit.size == 0:
            return np.zeros(shape, dtype=np.int32)
        all_shapes = self.shapes()
        shapes = ((all_shapes[i], i + 1) for i in hit.tolist())
        transform = Affine(resolution, 0.0, x0, 0.0, resolution, y0)
        return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32")


@dataclass
class _Features:
    """Features being collected, one layer after another."""

    geoms: list[np.ndarray]
    codes: list[np.ndarray]
    angles: list[np.ndarray]
    centres: list[np.ndarray]
    half_widths: list[np.ndarray]
    pitched: list[np.ndarray]

    def add(
        self,
        geoms: np.ndarray,
        codes: np.ndarray | int,
        angles: np.ndarray | float = 0.0,
        centres: np.ndarray | None = None,
        half_widths: np.ndarray | float = 0.0,
        pitched: np.ndarray | bool = False,
    ) -> None:
        geoms = np.asarray(geoms, dtype=object)
        keep = ~(shapely.is_empty(geoms) | shapely.is_missing(geoms))
        n = len(geoms)

        def per_feature(value: np.ndarray | float, dtype: type) -> np.ndarray:
            return np.broadcast_to(np.asarray(value, dtype=dtype), (n,))[keep]

        if centres is None:
            centres = shapely.get_coordinates(shapely.centroid(geoms)) if n else np.zeros((0, 2))
            centres = centres if len(centres) == n else np.zeros((n, 2))
        self.geoms.append(geoms[keep])
        self.codes.append(per_feature(codes, np.uint8))
        self.angles.append(per_feature(angles, np.float64))
        self.centres.append(np.asarray(centres, dtype=np.float64).reshape(n, 2)[keep])
        self.half_widths.append(per_feature(half_widths, np.float64))
        self.pitched.append(per_feature(pitched, bool))

    def layout(self, width: float, height: float, background: int) -> Layout:
        geoms = np.concatenate(self.geoms) if self.geoms else np.zeros(0, dtype=object)
        return Layout(
            width=width,
            height=height,
            geoms=geoms,
            codes=np.concatenate([[background], *self.codes]).astype(np.uint8),
            angles=np.concatenate([[0.0], *self.angles]),
            centres=np.concatenate([np.zeros((1, 2)), *self.centres]),
            half_widths=np.concatenate([[1.0], *self.half_widths]),
            pitched=np.concatenate([[False], *self.pitched]),
            bounds=shapely.bounds(geoms).reshape(-1, 4),
        )


def _jittered_grid(rng: np.random.Generator, rect: tuple[float, float, float, float], spacing: float) -> np.ndarray:
    x0, y0, x1, y1 = rect
    nx, ny = max(1, round((x1 - x0) / spacing)), max(1, round((y1 - y0) / spacing))
    sx, sy = (x1 - x0) / nx, (y1 - y0) / ny
    gx, gy = np.meshgrid(x0 + (np.arange(nx) + 0.5) * sx, y0 + (np.arange(ny) + 0.5) * sy)
    jitter = rng.uniform(-0.38, 0.38, size=(gx.size, 2)) * (sx, sy)
    return np.column_stack([gx.ravel(), gy.ravel()]) + jitter


def _inside(points: np.ndarray, rect: tuple[float, float, float, float], margin: float = 0.0) -> np.ndarray:
    x0, y0, x1, y1 = rect
    return (
        (points[:, 0] >= x0 - margin)
        & (points[:, 0] <= x1 + margin)
        & (points[:, 1] >= y0 - margin)
        & (points[:, 1] <= y1 + margin)
    )


def _seeds(
    rng: np.random.Generator,
    extent: tuple[float, float, float, float],
    inner: tuple[float, float, float, float],
    spacing: float,
    scale: float,
) -> np.ndarray:
    """Jittered grid points: ``spacing * scale`` apart inside ``inner``, ``spacing`` apart elsewhere."""
    if scale > 0.75:
        return _jittered_grid(rng, extent, spacing * scale)
    outer = _jittered_grid(rng, extent, spacing)
    outer = outer[~_inside(outer, inner, 0.5 * spacing)]
    return np.concatenate([outer, _jittered_grid(rng, inner, spacing * scale)])


def _clip(geoms: np.ndarray, extent: tuple[float, float, float, float]) -> np.ndarray:
    """``geoms`` clipped to ``extent``; only those crossing its border are intersected (the costly part)."""
    b = shapely.bounds(geoms)
    out = np.array(geoms, dtype=object)
    crossing = np.flatnonzero(
        (b[:, 0] < extent[0]) | (b[:, 1] < extent[1]) | (b[:, 2] > extent[2]) | (b[:, 3] > extent[3])
    )
    out[crossing] = shapely.intersection(geoms[crossing], shapely.box(*extent))
    return out


def _voronoi(points: np.ndarray, extent: tuple[float, float, float, float]) -> np.ndarray:
    """Voronoi cells of ``points`` (same order), clipped to ``extent``."""
    frame = shapely.box(*extent)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(points), extend_to=frame, ordered=True))
    return _clip(cells, extent)


def _nearest(points: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Index of the seed nearest to each point."""
    tree = shapely.STRtree(shapely.points(seeds))
    found = tree.query_nearest(shapely.points(points), all_matches=False)
    out = np.zeros(len(points), dtype=np.int64)
    out[found[0]] = found[1]
    return out


def _rectangles(centres: np.ndarray, lengths: np.ndarray, widths: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotated rectangles; ``lengths`` run along ``angles``."""
    if len(centres) == 0:
        return np.zeros(0, dtype=object)
    u = np.column_stack([np.cos(angles), np.sin(angles)])
    v = np.column_stack([-np.sin(angles), np.cos(angles)])
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)], dtype=np.float64) * 0.5
    coords = (
        centres[:, None, :]
        + corners[None, :, 0:1] * lengths[:, None, None] * u[:, None, :]
        + corners[None, :, 1:2] * widths[:, None, None] * v[:, None, :]
    )
    return shapely.polygons(coords)


def _blobs(rng: np.random.Generator, centres: np.ndarray, radii: np.ndarray, vertices: int = 36) -> np.ndarray:
    """Irregular round polygons (ponds, snow patches)."""
    n = len(centres)
    if n == 0:
        return np.zeros(0, dtype=object)
    theta = np.linspace(0.0, 2 * np.pi, vertices, endpoint=False)
    r = np.ones((n, vertices))
    for k in (2, 3, 5):
        r += rng.uniform(0.05, 0.22, (n, 1)) / (k / 2) * np.sin(k * theta[None] + rng.uniform(0, 2 * np.pi, (n, 1)))
    r *= radii[:, None]
    coords = centres[:, None, :] + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)
    return shapely.polygons(np.concatenate([coords, coords[:, :1]], axis=1))


def _main_axis(geoms: np.ndarray) -> np.ndarray:
    """Orientation (radians) of the long side of each polygon's minimum rotated rectangle."""
    rect = shapely.minimum_rotated_rectangle(geoms)
    coords = shapely.get_coordinates(rect)
    counts = shapely.get_num_coordinates(rect)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if len(coords) == 0:
        return np.zeros(len(geoms))
    safe = np.minimum(starts, len(coords) - 3)
    a, b, c = coords[safe], coords[safe + 1], coords[safe + 2]
    first, second = b - a, c - b
    long_first = np.hypot(*first.T) >= np.hypot(*second.T)
    edge = np.where(long_first[:, None], first, second)
    return np.where(counts >= 4, np.arctan2(edge[:, 1], edge[:, 0]), 0.0)


def _assign_types(rng: np.random.Generator, seeds: np.ndarray, focus: tuple[float, float, float, float]) -> np.ndarray:
    """District types: the focus districts cycle through all three types, the others are drawn at random."""
    types = rng.choice(DISTRICT_TYPES, size=len(seeds), p=[0.3, 0.42, 0.28])
    x0, y0, x1, y1 = focus
    dx = np.maximum(0.0, np.maximum(x0 - seeds[:, 0], seeds[:, 0] - x1))
    dy = np.maximum(0.0, np.maximum(y0 - seeds[:, 1], seeds[:, 1] - y1))
    distance = np.hypot(dx, dy) + rng.uniform(0, 1e-3, len(seeds))
    n_focus = max(len(DISTRICT_TYPES), int((distance < 1e-2).sum()))
    chosen = np.argsort(distance)[:n_focus]
    cycle = np.array([URBAN, AGRICULTURAL, NATURAL])
    cycle = np.tile(rng.permutation(cycle), -(-n_focus // 3))[:n_focus]
    types[chosen[rng.permutation(n_focus)]] = cycle
    return types


def _draw(rng: np.random.Generator, weights: dict[str, float], n: int) -> np.ndarray:
    names = list(weights)
    p = np.array([weights[k] for k in names])
    return np.array([C[k] for k in names], dtype=np.uint8)[rng.choice(len(names), size=n, p=p / p.sum())]


def build_layout(
    rng: np.random.Generator,
    width: float,
    height: float,
    focus: tuple[float, float, float, float],
    scale: float,
) -> Layout:
    """A layout of ``width`` x ``height`` metres whose ``focus`` rectangle holds every class.

    ``scale`` (<= 1) shrinks feature sizes inside the focus (and a margin around it) so that small areas
    still hold all classes; outside, features keep their real sizes.
    """
    extent = (0.0, 0.0, width, height)
    margin = 1.5 * DISTRICT_SPACING * scale
    inner = (
        max(0.0, focus[0] - margin),
        max(0.0, focus[1] - margin),
        min(width, focus[2] + margin),
        min(height, focus[3] + margin),
    )
    focus_box = shapely.box(*focus)

    def local_scale(points: np.ndarray) -> np.ndarray:
        return np.where(_inside(points, inner), scale, 1.0) if scale <= 0.75 else np.full(len(points), scale)

    districts = _seeds(rng, extent, inner, DISTRICT_SPACING, scale)
    types = _assign_types(rng, districts, focus)
    district_angle = rng.uniform(0, np.pi, len(districts))

    parcel_seeds = _seeds(rng, extent, inner, PARCEL_SPACING, scale)
    parcels = _voronoi(parcel_seeds, extent)
    parcel_district = _nearest(parcel_seeds, districts)
    parcel_type = types[parcel_district]
    parcel_codes = np.zeros(len(parcels), dtype=np.uint8)
    in_focus = np.zeros(len(parcels))
    b = shapely.bounds(parcels)
    near = np.flatnonzero((b[:, 0] < focus[2]) & (b[:, 2] > focus[0]) & (b[:, 1] < focus[3]) & (b[:, 3] > focus[1]))
    in_focus[near] = shapely.area(shapely.intersection(parcels[near], focus_box))
    for kind in DISTRICT_TYPES:
        members = np.flatnonzero(parcel_type == kind)
        parcel_codes[members] = _draw(rng, PARCEL_WEIGHTS[kind], len(members))
        enabled, disabled = REQUIRED_PARCELS[kind]
        required = [C[k] for k in rng.permutation(enabled)] + [C[k] for k in rng.permutation(disabled)]
        ranked = members[np.argsort(-in_focus[members], kind="stable")]
        ranked = ranked[in_focus[ranked] > 0]
        for index, code in zip(ranked, required, strict=False):
            parcel_codes[index] = code
    parcel_angle = _main_axis(parcels) + rng.normal(0, 0.03, len(parcels))

    features = _Features([], [], [], [], [], [])
    features.add(parcels, parcel_codes, parcel_angle)

    used: set[int] = set()

    def hosts(kind: int, share: float) -> tuple[np.ndarray, np.ndarray]:
        """Parcels of type ``kind`` to carry an overlay, and a point inside each.

        A random ``share`` of them, plus the unused one with most area in the focus, whose point is in the focus.
        """
        members = np.flatnonzero(parcel_type == kind)
        chosen = members[rng.random(len(members)) < share]
        points = shapely.get_coordinates(shapely.point_on_surface(parcels[chosen])).reshape(-1, 2)
        candidates = np.flatnonzero((parcel_type == kind) & (in_focus > 0))
        candidates = candidates[~np.isin(candidates, list(used))]
        if candidates.size:
            best = candidates[np.argmax(in_focus[candidates])]
            used.add(int(best))
            inside = shapely.intersection(parcels[best], focus_box)
            chosen = np.append(chosen, best)
            points = np.vstack([points, shapely.get_coordinates(shapely.point_on_surface(inside)).reshape(-1, 2)])
        return chosen, points

    # Rivers and ponds.
    if rng.random() < 0.35:
        t = np.linspace(0, 1, 60)
        y_start, y_end = rng.uniform(0.2, 0.8, 2) * height
        wiggle = rng.uniform(0.03, 0.08) * height * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6))
        line = shapely.linestrings(np.column_stack([t * width, y_start + (y_end - y_start) * t + wiggle]))
        features.add(np.array([shapely.buffer(line, 5.0 * max(scale, 0.3))]), C["water"])
    pond_hosts, pond_centres = hosts(NATURAL, 0.12)
    pond_radii = 0.38 * np.sqrt(shapely.area(parcels[pond_hosts])) * rng.uniform(0.6, 1.0, len(pond_hosts))
    features.add(_blobs(rng, pond_centres, pond_radii), C["water"])

    # Urban lots: gardens or paved yards, each with a building and sometimes a pool.
    lot_seeds = _seeds(rng, extent, inner, LOT_SPACING, scale)
    lots = _voronoi(lot_seeds, extent)
    lot_district = _nearest(lot_seeds, districts)
    urban_lots = np.flatnonzero(types[lot_district] == URBAN)
    lots, lot_district, lot_scale = lots[urban_lots], lot_district[urban_lots], local_scale(lot_seeds[urban_lots])
    paved = rng.random(len(lots)) < 0.2
    features.add(lots, np.where(paved, C["impervious surface"], C["pervious surface"]))

    # Roads: Voronoi edges between parcels of different districts, streets inside urban districts.
    edges = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(parcel_seeds), extend_to=shapely.box(*extent), only_edges=True)
    )
    edges = _clip(edges, extent)
    edges = edges[~shapely.is_empty(edges) & (shapely.length(edges) > 0)]
    ends = shapely.get_coordinates(shapely.get_point(edges, 0)), shapely.get_coordinates(shapely.get_point(edges, -1))
    mids = (ends[0] + ends[1]) / 2
    along = ends[1] - ends[0]
    normal = np.column_stack([-along[:, 1], along[:, 0]]) / np.maximum(np.hypot(*along.T), 1e-9)[:, None] * 0.05
    # The parcels on either side of an edge own the points just beside its middle.
    d_a = parcel_district[_nearest(mids + normal, parcel_seeds)]
    d_b = parcel_district[_nearest(mids - normal, parcel_seeds)]
    boundary = d_a != d_b
    urban_side = (types[d_a] == URBAN) | (types[d_b] == URBAN)
    keep_p = np.where(boundary, np.where(urban_side, 0.95, 0.5), np.where(urban_side, 0.8, 0.0))
    keep = rng.random(len(edges)) < keep_p
    road_width = np.where(boundary, MAIN_ROAD_WIDTH, STREET_WIDTH) * local_scale(mids)
    roads = shapely.buffer(edges[keep], road_width[keep] / 2, quad_segs=2)
    features.add(roads, C["impervious surface"])
    road_tree = shapely.STRtree(roads)

    def on_road(geoms: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(geoms), dtype=bool)
        hit[road_tree.query(geoms, predicate="intersects")[0]] = True
        return hit

    # Buildings.
    lot_area = shapely.area(lots)
    lot_centre = shapely.get_coordinates(shapely.point_on_surface(lots)).reshape(-1, 2)
    big = paved & (rng.random(len(lots)) < 0.7)
    has_building = np.where(paved, big, rng.random(len(lots)) < 0.85)
    side = np.sqrt(lot_area)
    length = np.where(big, 0.72, rng.uniform(0.45, 0.6, len(lots))) * side
    width_b = length * np.where(big, rng.uniform(0.6, 0.8, len(lots)), rng.uniform(0.55, 0.85, len(lots)))
    angle = district_angle[lot_district] + rng.normal(0, 0.06, len(lots))
    centre = lot_centre + rng.uniform(-0.08, 0.08, (len(lots), 2)) * side[:, None]
    rects = _rectangles(centre, length, width_b, angle)
    shrunk = shapely.buffer(lots, -0.8 * lot_scale)
    buildings = shapely.intersection(rects, shrunk)
    ok = has_building & (shapely.area(buildings) > (2.5 * lot_scale) ** 2) & ~on_road(buildings)
    features.add(buildings[ok], C["building"], angle[ok], centre[ok], half_widths=width_b[ok] / 2, pitched=~big[ok])

    # Pools beside houses, on the first side of the house (front, back, left, right) where one fits.
    side_sign = rng.choice([-1.0, 1.0], (len(lots), 1))
    across = np.column_stack([-np.sin(angle), np.cos(angle)]) * side_sign
    along = np.column_stack([np.cos(angle), np.sin(angle)]) * side_sign
    pool_w, pool_l = rng.uniform(4.0, 5.5, len(lots)) * lot_scale, rng.uniform(8.0, 11.0, len(lots)) * lot_scale
    gap = 1.0 * lot_scale
    pools = np.full(len(lots), None, dtype=object)
    fits = np.zeros(len(lots), dtype=bool)
    for direction, reach in (
        (across, width_b / 2 + pool_w / 2 + gap),
        (-across, width_b / 2 + pool_w / 2 + gap),
        (along, length / 2 + pool_l / 2 + gap),
        (-along, length / 2 + pool_l / 2 + gap),
    ):
        todo = np.flatnonzero(ok & ~paved & ~fits)
        candidate = _rectangles(
            centre[todo] + direction[todo] * reach[todo, None], pool_l[todo], pool_w[todo], angle[todo]
        )
        good = shapely.contains(shrunk[todo], candidate) & ~on_road(candidate)
        pools[todo[good]] = candidate[good]
        fits[todo[good]] = True
    want = fits & (rng.random(len(lots)) < 0.85)
    focus_lots = np.flatnonzero(fits & shapely.intersects(focus_box, np.where(fits, pools, None)))
    want[focus_lots[:2]] = True
    features.add(pools[want], C["swimming pool"])

    # Greenhouses and ground-mounted solar panels (class "other") on agricultural parcels.
    gh_hosts, gh_centre = hosts(AGRICULTURAL, 0.05)
    gh_side = np.sqrt(shapely.area(parcels[gh_hosts]))
    greenhouses = shapely.intersection(
        _rectangles(gh_centre, 0.75 * gh_side, 0.45 * gh_side, parcel_angle[gh_hosts]),
        shapely.buffer(parcels[gh_hosts], -1.0 * scale),
    )
    features.add(greenhouses, C["greenhouse"], parcel_angle[gh_hosts], gh_centre)
    pv_hosts, pv_centre = hosts(AGRICULTURAL, 0.02)
    pv_side = np.sqrt(shapely.area(parcels[pv_hosts]))
    panels = shapely.intersection(
        _rectangles(pv_centre, 0.4 * pv_side, 0.22 * pv_side, parcel_angle[pv_hosts]), parcels[pv_hosts]
    )
    features.add(panels, C["other"], parcel_angle[pv_hosts] + np.pi / 2, pv_centre)

    # Snow patches in natural districts (rarer than most classes, as in FLAIR, yet enough to be learnt).
    _, snow_centre = hosts(NATURAL, 0.08)
    snow_radius = rng.uniform(8.0, 14.0, len(snow_centre)) * local_scale(snow_centre)
    features.add(_blobs(rng, snow_centre, snow_radius), C["snow"])

    return features.layout(width, height, background=C["herbaceous vegetation"])
