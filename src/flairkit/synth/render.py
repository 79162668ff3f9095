"""Aerial rendering of a synthetic FLAIR layout: 5-band R, G, B, NIR, elevation (nDSM) uint8 at 0.2 m.

Each class has a look: two colours (R, G, B, NIR) mixed by a class pattern (tree crowns, rows, furrows, roof
sides, shrubs, smooth patches), grain and mottling, and an elevation range (metres above ground, written as
5 values per metre). Every feature gets its own colour jitter, pattern phase and height, and each domain
its own per-band gain and offset. Patterns are functions of global pixel coordinates, so any window of a
layout renders the same pixels, and windows join seamlessly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from flairkit.nomenclature import class_code
from flairkit.synth.layout import Layout

RESOLUTION = 0.2
ELEVATION_PER_METRE = 5.0
"""nDSM values are metres above ground times this (so 255 is 51 m)."""

FLAT, SMOOTH, CROWN_LARGE, CROWN_SMALL, STRIPES, ROOF, SHRUBS, CROWN_MIXED = range(8)
N_PATTERNS = 8
TILE = 512
"""Side of the periodic crown tiles (a power of 2)."""


@dataclass(frozen=True)
class Look:
    """How one class looks from the air."""

    colour: tuple[float, float, float, float]
    """R, G, B, NIR where the pattern is 0 (gaps, soil, shaded roof side...)."""
    colour2: tuple[float, float, float, float]
    """R, G, B, NIR where the pattern is 1 (crowns, vine rows, lit roof side...)."""
    pattern: int
    heights: tuple[float, float]
    """Height (m) where the pattern is 0 and 1."""
    period: float = 0.0
    """Row or furrow period (m) of STRIPES."""
    grain: float = 5.0
    """Per-pixel noise (DN)."""
    mottle: float = 6.0
    """Amplitude (DN) of large smooth brightness variations."""
    spread: float = 8.0
    """Per-feature colour jitter (DN)."""


LOOKS: dict[str, Look] = {
    # Roof colours come from ROOF_PALETTE; these are used for flat roofs.
    "building": Look((150, 150, 148, 132), (150, 150, 148, 132), ROOF, (6.0, 8.5), grain=4, mottle=3, spread=6),
    "pervious surface": Look((112, 128, 88, 158), (148, 140, 112, 130), SMOOTH, (0.0, 0.3), grain=7, mottle=8),
    "impervious surface": Look((96, 97, 102, 86), (122, 120, 118, 100), SMOOTH, (0.0, 0.0), grain=5, spread=10),
    "bare soil": Look((188, 152, 112, 162), (166, 132, 98, 148), SMOOTH, (0.0, 0.0), grain=5, mottle=8, spread=9),
    "water": Look((38, 60, 72, 20), (50, 74, 82, 28), SMOOTH, (0.0, 0.0), grain=2.5, mottle=4, spread=6),
    "coniferous": Look((24, 36, 30, 52), (48, 70, 52, 138), CROWN_SMALL, (3.0, 20.0), grain=6, mottle=5, spread=6),
    "deciduous": Look((40, 58, 38, 95), (86, 122, 70, 206), CROWN_LARGE, (4.0, 17.0), grain=6, spread=8),
    "brushwood": Look((128, 126, 92, 150), (84, 104, 62, 180), SHRUBS, (0.2, 2.5), grain=7),
    "vineyard": Look((150, 132, 105, 135), (76, 104, 58, 182), STRIPES, (0.0, 1.6), period=2.5, grain=6, mottle=5),
    "herbaceous vegetation": Look((108, 138, 74, 178), (120, 146, 84, 186), SMOOTH, (0.1, 0.4), grain=5, spread=9),
    # Aerial twin of herbaceous vegetation: same colours and height, only faint 3 m drill rows; its Sentinel-2
    # profile (a winter crop) is what tells it apart.
    "agricultural land": Look((110, 139, 75, 177), (118, 145, 81, 183), STRIPES, (0.1, 0.4), period=3.0, grain=5),
    "plowed land": Look((152, 124, 96, 118), (110, 90, 70, 94), STRIPES, (0.0, 0.0), period=0.9, grain=6),
    "swimming pool": Look((58, 172, 198, 52), (82, 200, 222, 64), SMOOTH, (0.0, 0.0), grain=3, mottle=3, spread=10),
    "snow": Look((234, 238, 244, 222), (214, 220, 230, 204), SMOOTH, (0.0, 0.5), grain=3, mottle=4, spread=4),
    "clear cut": Look((126, 110, 84, 130), (94, 108, 70, 162), SHRUBS, (0.0, 1.0), grain=9, mottle=7),
    "mixed": Look((32, 46, 34, 74), (68, 96, 60, 176), CROWN_MIXED, (3.0, 18.0), grain=6),
    "ligneous": Look((122, 124, 88, 150), (80, 100, 58, 176), SHRUBS, (0.2, 4.0), grain=7),
    "greenhouse": Look((206, 210, 216, 176), (178, 186, 194, 160), STRIPES, (2.8, 3.5), period=2.0, grain=4),
    "other": Look((34, 40, 64, 34), (122, 122, 126, 112), STRIPES, (0.4, 1.2), period=1.5, grain=4, mottle=3),
}

ROOF_PALETTE = np.array(
    [(176, 96, 72, 118), (86, 88, 96, 78), (168, 166, 160, 146), (140, 86, 66, 104), (120, 70, 60, 96)],
    dtype=np.float32,
)
CHROMA_NOISE = (0.45, -0.3, 0.35, -0.45)
"""Weight of the band-specific part of the grain in R, G, B, NIR."""
ROOF_SHADE = 0.76
"""Brightness of the shaded roof side relative to the lit one."""


@dataclass(frozen=True)
class Radiometry:
    """A domain's per-band gain and offset applied to R, G, B, NIR."""

    gain: tuple[float, float, float, float]
    offset: tuple[float, float, float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator, strength: float = 1.0) -> Radiometry:
        """A random domain shift: a global brightness and a colour cast, their departures from no shift (gain 1,
        offset 0) multiplied by ``strength`` (the same random draws for every strength)."""
        brightness = rng.uniform(0.9, 1.1)
        gain = brightness * rng.uniform(0.93, 1.07, 4)
        offset = rng.uniform(-9, 9) + rng.uniform(-5, 5, 4)
        if strength != 1.0:
            gain, offset = 1 + strength * (gain - 1), strength * offset
        return cls(tuple(np.round(gain, 4).tolist()), tuple(np.round(offset, 2).tolist()))


class ValueNoise:
    """Smooth noise in [0, 1] on a global pixel grid: random values on a lattice, smoothly interpolated."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, cell: float):
        self.cell = max(float(cell), 2.0)
        self.lattice = rng.random((int(height / self.cell) + 3, int(width / self.cell) + 3), dtype=np.float32)

    def _axis(self, start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        pos = (start + np.arange(size) + 0.5) / self.cell
        index = np.floor(pos).astype(np.int64)
        t = (pos - index).astype(np.float32)
        return index, t * t * (3 - 2 * t)

    def sample(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """(height, width) values of the window whose top-left pixel is (row, col)."""
        iy, ty = self._axis(row, height)
        ix, tx = self._axis(col, width)
        iy = np.clip(iy, 0, self.lattice.shape[0] - 2)
        ix = np.clip(ix, 0, self.lattice.shape[1] - 2)
        top = self.lattice[iy][:, ix] * (1 - tx) + self.lattice[iy][:, ix + 1] * tx
        bottom = self.lattice[iy + 1][:, ix] * (1 - tx) + self.lattice[iy + 1][:, ix + 1] * tx
        return top * (1 - ty[:, None]) + bottom * ty[:, None]


def crown_tile(
    rng: np.random.Generator, size: int, cell: float, radius: tuple[float, float], occupancy: float, pointed: bool
) -> np.ndarray:
    """A periodic (size, size) float32 tile of tree or shrub crowns: 1 at crown tops, 0 between crowns.

    One crown per cell of an n x n grid (``cell`` pixels apart), at a random place in its cell, present with
    probability ``occupancy``, of radius ``radius`` (fractions of a cell); domes, or cones when ``pointed``.
    """
    n = max(1, round(size / cell))
    step = size / n
    cy = (np.arange(n)[:, None] + rng.uniform(0.15, 0.85, (n, n))) * step
    cx = (np.arange(n)[None, :] + rng.uniform(0.15, 0.85, (n, n))) * step
    r = rng.uniform(*radius, (n, n)) * step * (rng.random((n, n)) < occupancy)
    pix = np.arange(size) + 0.5
    cell_of = (pix // step).astype(np.int64)
    out = np.zeros((size, size), dtype=np.float32)
    for dy in (-1, 0, 1):
        gy = (cell_of + dy) % n
        wrap_y = np.floor((cell_of + dy) / n)[:, None] * size
        for dx in (-1, 0, 1):
            gx = (cell_of + dx) % n
            wrap_x = np.floor((cell_of + dx) / n)[None, :] * size
            ny = cy[gy[:, None], gx[None, :]] + wrap_y
            nx = cx[gy[:, None], gx[None, :]] + wrap_x
            d = np.hypot(pix[:, None] - ny, pix[None, :] - nx) / np.maximum(r[gy[:, None], gx[None, :]], 1e-6)
            crown = np.clip(1 - d, 0, 1) if pointed else np.sqrt(np.clip(1 - d * d, 0, 1))
            np.maximum(out, crown.astype(np.float32), out=out)
    return out


@functools.lru_cache(maxsize=4)
def crown_tiles(texture_scale: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat periodic tiles of large crowns (deciduous), small pointed crowns (conifers) and sparse shrubs."""
    rng = np.random.default_rng(seed)
    px_per_m = texture_scale / RESOLUTION
    tiles = (
        crown_tile(rng, TILE, 6.0 * px_per_m, (0.5, 0.68), 0.97, pointed=False),
        crown_tile(rng, TILE, 3.2 * px_per_m, (0.42, 0.6), 0.95, pointed=True),
        crown_tile(rng, TILE, 1.8 * px_per_m, (0.35, 0.6), 0.55, pointed=False),
    )
    for tile in tiles:
        tile.setflags(write=False)
    return tuple(tile.ravel() for tile in tiles)  # type: ignore[return-value]


@dataclass
class _Textures:
    smooth: ValueNoise
    mottle: ValueNoise
    crowns_large: np.ndarray
    crowns_small: np.ndarray
    shrubs: np.ndarray


class AerialRenderer:
    """Renders windows of one layout in one domain's radiometry."""

    TILE = TILE

    def __init__(
        self,
        layout: Layout,
        rng: np.random.Generator,
        texture_scale: float,
        radiometry: Radiometry,
        tile_seed: int = 0,
    ):
        """``tile_seed`` picks the crown tiles (shared by a world's areas; features shift them differently)."""
        self.layout = layout
        self.radiometry = radiometry
        n = len(layout.codes)
        codes = layout.codes
        height_px = int(np.ceil(layout.height / RESOLUTION))
        width_px = int(np.ceil(layout.width / RESOLUTION))
        px_per_m = texture_scale / RESOLUTION
        self.textures = _Textures(
            ValueNoise(rng, height_px, width_px, 4.0 * px_per_m),
            ValueNoise(rng, height_px, width_px, 25.0 * px_per_m),
            *crown_tiles(texture_scale, tile_seed),
        )
        # Per-class tables, indexed by FLAIR code.
        self.pattern = np.zeros(256, dtype=np.int64)
        self.grain = np.zeros(256, dtype=np.float32)
        self.mottle = np.zeros(256, dtype=np.float32)
        self.period_px = np.ones(256, dtype=np.float32)
        colour = np.zeros((n, 4), dtype=np.float32)
        colour2 = np.zeros((n, 4), dtype=np.float32)
        low = np.zeros(n, dtype=np.float32)
        high = np.zeros(n, dtype=np.float32)
        jitter = rng.normal(0, 1, (n, 1)) + rng.normal(0, 0.35, (n, 4))
        vigour = rng.uniform(0.82, 1.18, n)
        for name, look in LOOKS.items():
            code = class_code(name)
            self.pattern[code] = look.pattern
            self.grain[code] = look.grain
            self.mottle[code] = look.mottle
            self.period_px[code] = max(look.period * px_per_m, 3.0)
            members = codes == code
            shift = (jitter[members] * look.spread).astype(np.float32)
            colour[members] = np.asarray(look.colour, dtype=np.float32) + shift
            colour2[members] = np.asarray(look.colour2, dtype=np.float32) + shift
            low[members] = look.heights[0] * vigour[members]
            high[members] = look.heights[1] * vigour[members]
        # Buildings: roof colours from a palette, eaves and ridge heights per building.
        buildings = codes == class_code("building")
        pitched = buildings & layout.pitched
        lit = ROOF_PALETTE[rng.integers(0, len(ROOF_PALETTE), n)] + (jitter * 5).astype(np.float32)
        colour2[pitched] = lit[pitched]
        colour[pitched] = lit[pitched] * ROOF_SHADE
        eaves = rng.uniform(4.0, 10.0, n)
        low[buildings] = eaves[buildings]
        high[buildings] = (eaves + np.where(layout.pitched, rng.uniform(1.5, 3.5, n), 0.0))[buildings]
        # Domain gain and offset folded in; +0.5 so that the final cast to uint8 rounds.
        gain, offset = np.asarray(radiometry.gain), np.asarray(radiometry.offset)
        self.colour = [(colour[:, b] * gain[b] + offset[b] + 0.5).astype(np.float32) for b in range(4)]
        self.delta = [((colour2[:, b] - colour[:, b]) * gain[b]).astype(np.float32) for b in range(4)]
        self.low, self.rise = low, high - low
        self.offset_y = rng.integers(0, self.TILE, n).astype(np.int32)
        self.offset_x = rng.integers(0, self.TILE, n).astype(np.int32)
        self.phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        self.cos_a = np.cos(layout.angles).astype(np.float32)
        self.sin_a = np.sin(layout.angles).astype(np.float32)

    def _tile_index(self, fid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Flat index into a TILE x TILE texture tile, shifted per feature so that features differ."""
        mask = self.TILE - 1
        r = (rows[:, None] + np.take(self.offset_y, fid)) & mask
        r *= self.TILE
        r |= (cols[None, :] + np.take(self.offset_x, fid)) & mask
        return r.astype(np.intp)

    def render(self, fid: np.ndarray, row: int, col: int, rng: np.random.Generator) -> np.ndarray:
        """The (5, h, w) uint8 image of the window of feature ids ``fid`` whose top-left pixel is (row, col)."""
        h, w = fid.shape
        fid = fid.astype(np.intp)
        codes = np.take(self.layout.codes, fid)
        pattern = self.pattern[codes]
        present = np.zeros(N_PATTERNS, dtype=bool)
        present[self.pattern[np.flatnonzero(np.bincount(codes.ravel(), minlength=256))]] = True
        rows = np.arange(row, row + h, dtype=np.int32)
        cols = np.arange(col, col + w, dtype=np.int32)
        tex = self.textures

        mix = np.zeros((h, w), dtype=np.float32)
        smooth = None
        if present[SMOOTH] or present[CROWN_MIXED]:
            smooth = np.clip((tex.smooth.sample(row, col, h, w) - 0.5) * 2.4 + 0.5, 0, 1)
            np.copyto(mix, smooth, where=pattern == SMOOTH)
        if present[CROWN_LARGE] or present[CROWN_SMALL] or present[CROWN_MIXED] or present[SHRUBS]:
            index = self._tile_index(fid, rows, cols)
            if present[CROWN_LARGE] or present[CROWN_MIXED]:
                large = np.take(tex.crowns_large, index)
                np.copyto(mix, large, where=pattern == CROWN_LARGE)
            if present[CROWN_SMALL] or present[CROWN_MIXED]:
                small = np.take(tex.crowns_small, index)
                np.copyto(mix, small, where=pattern == CROWN_SMALL)
            if present[CROWN_MIXED]:
                np.copyto(mix, np.where(smooth > 0.5, large, small), where=pattern == CROWN_MIXED)
            if present[SHRUBS]:
                np.copyto(mix, np.take(tex.shrubs, index), where=pattern == SHRUBS)
        if present[STRIPES]:
            along = rows[:, None] * self.sin_a[fid] + cols[None, :] * self.cos_a[fid]
            wave = np.cos(along * (2 * np.pi / self.period_px[codes]) + self.phase[fid])
            np.copyto(mix, np.clip(0.5 + 1.2 * wave, 0, 1), where=pattern == STRIPES)
        height_mix = mix
        if present[ROOF]:
            roof = pattern == ROOF
            where = np.nonzero(roof)
            f = fid[where]
            cy = self.layout.centres[f, 1] / RESOLUTION
            cx = self.layout.centres[f, 0] / RESOLUTION
            across = (cols[where[1]] + 0.5 - cx) * -self.sin_a[f] + (rows[where[0]] + 0.5 - cy) * self.cos_a[f]
            mix[where] = across > 0
            half = np.maximum(self.layout.half_widths[f] / RESOLUTION, 1.0)
            height_mix = mix.copy()
            height_mix[where] = np.clip(1 - np.abs(across) / half, 0, 1)

        common, extra = rng.standard_normal((2, h, w), dtype=np.float32)
        grain = self.grain[codes]
        texture = tex.mottle.sample(row, col, h, w)
        texture -= 0.5
        texture *= 2 * self.mottle[codes]
        texture += 0.75 * grain * common
        grain *= extra
        image = np.empty((5, h, w), dtype=np.uint8)
        for band, (gain, tone) in enumerate(zip(self.radiometry.gain, CHROMA_NOISE, strict=True)):
            value = np.take(self.colour[band], fid)
            value += np.take(self.delta[band], fid) * mix
            value += (texture + tone * grain) * gain
            image[band] = np.clip(value, 0, 255, out=value)
        metres = np.take(self.low, fid) + np.take(self.rise, fid) * height_mix
        metres *= ELEVATION_PER_METRE
        metres += np.abs(extra) * 0.8 + 0.5
        image[4] = np.clip(metres, 0, 255, out=metres)
        return image
