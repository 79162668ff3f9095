"""Tile and block grids of zone detection, in whole pixels.

Two stitching modes share one vocabulary:

- a *tile* is a ``tile_size`` square fed to the network; its *kept* window is the part of its prediction
  that reaches the map;
- a *block* is a rectangle of the output map, the unit that is computed, written, journaled for resume
  and handed to one rank. A block always gathers every tile that contributes to it, so blocks are
  independent and the map does not depend on how blocks are shared out.

``margin`` mode reproduces the tiling of IGN's ``flair-detect`` (after IGNF/FLAIR-1
``src/zone_detect/slicing_job.py`` and IGNF/FLAIR-HUB ``flair_zonal_detection/slicing.py``): tile origins
run from ``min - margin`` in steps of ``tile - 2 * margin`` up to ``max + margin``, measured in map
coordinates, so columns start at the left edge and rows at the *bottom* edge; a tile that would pass
``max + margin`` is snapped back so that it ends there (duplicates removed); each tile keeps its centre
(``margin`` cropped on every side) and a tile written later overwrites an earlier one (columns left to
right, rows bottom to top). The official code writes kept windows that start before the raster with
GDAL resampling when the raster is narrower than one step; here they are clipped instead, unless the plan
carries the windows flair-detect computes (:func:`flair_detect_windows`), over which each tile's centre is
then stretched or squeezed as GDAL does.

``blend`` mode covers the scene extended by ``margin`` on every side with tiles ``tile - 2 * margin``
apart (the last one shifted inward), reads outside the scene by reflection, and averages the
probabilities of overlapping tiles with a Hann window.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace
from typing import Literal

import numpy as np
from rasterio.features import geometry_window
from rasterio.transform import Affine
from rasterio.windows import Window

from flairkit.data.scenes import Span

StitchingMode = Literal["margin", "blend"]
DEFAULT_BLOCK_SIDE = 2048
"""Target side of a block in pixels (rounded to a multiple of the tile step: :func:`resolve_block_size`)."""
TILE_MULTIPLE = 32
"""Fitted tiles are multiples of this (the output stride of the smp encoders)."""


@dataclass(frozen=True)
class Tile1D:
    """One tile along an axis: where its ``tile_size`` read starts and the span of the map it provides."""

    origin: int
    keep: Span
    source: Span | None = None
    """Tile pixels (from ``origin``) that ``keep`` shows, stretched or squeezed over it as GDAL writes a
    buffer into a window of another size (nearest); None: ``keep`` shows its own pixels, one to one."""


def step_of(tile_size: int, margin: int) -> int:
    """Distance between consecutive tile origins."""
    step = tile_size - 2 * margin
    if margin < 0 or step <= 0:
        raise ValueError(f"margin={margin} must be >= 0 and 2*margin < tile_size={tile_size}")
    return step


def margin_tiles_1d(length: int, tile_size: int, margin: int) -> list[Tile1D]:
    """Official flair-detect tiles along an axis of ``length`` pixels, measured from the start edge.

    Returned in the official order (increasing coordinate); kept spans are clipped to ``[0, length)``.
    """
    step = step_of(tile_size, margin)
    full = length // step
    tiles = [Tile1D(k * step - margin, Span(k * step, (k + 1) * step)) for k in range(full)]
    if length % step:
        # The snapped tile ends at length + margin; it keeps the last `step` pixels.
        tiles.append(Tile1D(length + margin - tile_size, Span(max(length - step, 0), length)))
    return tiles


def flair_detect_windows(
    width: int, height: int, transform: Affine, tile_size: int, margin: int
) -> tuple[list[Span], list[Span]]:
    """The pixel windows where flair-detect, as it runs on the installed rasterio, writes each tile's centre.

    flair-detect lays tiles out in map coordinates (floats), as :func:`margin_tiles_1d` does in pixels, and
    asks ``rasterio.features.geometry_window(..., pixel_precision=6)`` for each kept square. rasterio 1.3 and
    later ignore ``pixel_precision`` and take the floor and ceiling of the float pixel bounds, so float
    noise widens some windows by a pixel, and GDAL stretches the centre over them when writing. Returns the
    column windows (left to right) and row windows (bottom to top), in :func:`margin_tiles_1d`'s order.
    """
    if transform.b or transform.d:
        raise ValueError("flair-detect's windows are defined for north-up rasters only (no rotation)")
    grid = SimpleNamespace(transform=transform, width=width, height=height)
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * width, top + transform.e * height
    # As flair-detect: resolution rounded to 5 decimals, origins from np.arange, duplicates dropped.
    columns = _flair_detect_kept_bounds(left, right, tile_size, margin, abs(round(transform.a, 5)))
    rows = _flair_detect_kept_bounds(bottom, top, tile_size, margin, abs(round(-transform.e, 5)))

    def window(xs: tuple[float, float], ys: tuple[float, float]) -> Window:
        (x0, x1), (y0, y1) = xs, ys
        ring = [(x0, y1), (x1, y1), (x1, y0), (x0, y0), (x0, y1)]
        with warnings.catch_warnings():  # rasterio's own use of the affine package, not ours to fix
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            return geometry_window(grid, [{"type": "Polygon", "coordinates": [ring]}], pixel_precision=6)

    col_windows = [window(xs, rows[0]) for xs in columns]
    row_windows = [window(columns[0], ys) for ys in rows]
    return (
        [Span(int(w.col_off), int(w.col_off + w.width)) for w in col_windows],
        [Span(int(w.row_off), int(w.row_off + w.height)) for w in row_windows],
    )


def _flair_detect_kept_bounds(
    low: float, high: float, tile_size: int, margin: int, resolution: float
) -> list[tuple[float, float]]:
    """flair-detect's kept intervals along an axis of map coordinates, with its float arithmetic."""
    size, pad = tile_size * resolution, margin * resolution
    kept, seen = [], set()
    for origin in np.arange(low - pad, high + pad, size - 2 * pad):
        if origin + size > high + pad:
            origin = high + pad - size
        start, stop = origin + pad, min(origin + size - pad, high)
        key = (round(start, 6), round(stop, 6))
        if key not in seen:
            seen.add(key)
            kept.append((start, stop))
    return kept


def blend_tiles_1d(length: int, tile_size: int, margin: int) -> list[Tile1D]:
    """Blend-mode tiles along an axis: they cover ``[-margin, length + margin)``, the last shifted inward.

    A scene shorter than a tile gets one centred tile. Kept spans are the tiles clipped to the scene.
    """
    step = step_of(tile_size, margin)
    if length + 2 * margin <= tile_size:
        origins = [(length - tile_size) // 2]
    else:
        last = length + margin - tile_size
        origins = [*range(-margin, last, step), last]
    return [Tile1D(o, Span(max(o, 0), min(o + tile_size, length))) for o in origins]


def block_spans_1d(length: int, block: int, from_end: bool = False, shift: int = 0) -> list[Span]:
    """Cut ``[0, length)`` into spans of ``block`` pixels, boundaries ``shift`` pixels before multiples of ``block``.

    With ``from_end`` the boundaries are measured from the end of the axis (and ``shift`` is ignored).
    """
    if from_end:
        return [mirror(span, length) for span in reversed(block_spans_1d(length, block))]
    cuts = [0, *(c for c in range(block - shift, length, block) if c > 0), length]
    return [Span(a, b) for a, b in itertools.pairwise(cuts)]


def windows(height: int, width: int, rows: int, cols: int) -> Iterator[tuple[Span, Span]]:
    """(rows, cols) windows of at most ``rows`` x ``cols`` pixels covering a ``height`` x ``width`` raster,
    row-major: how detection reads its raw map back to write, vectorise and score it."""
    return itertools.product(block_spans_1d(height, rows), block_spans_1d(width, cols))


def mirror(span: Span, length: int) -> Span:
    """The span seen from the other edge of an axis of ``length`` pixels."""
    return Span(length - span.stop, length - span.start)


def hann_window(tile_size: int) -> np.ndarray:
    """1-D Hann weights ``sin²(π (i + ½) / n)``: smooth, symmetric, never exactly 0 (float32)."""
    i = np.arange(tile_size, dtype=np.float64)
    return (np.sin(np.pi * (i + 0.5) / tile_size) ** 2).astype(np.float32)


def resolve_block_size(
    tile_size: int, margin: int, block_size: int | None = None, mode: StitchingMode = "margin"
) -> int:
    """The block side: ``block_size`` (default :data:`DEFAULT_BLOCK_SIDE`) rounded to the nearest multiple of the
    tile step; by default in blend mode the largest multiple up to it (at least one step).

    A blend block holds float32 sums of every class (60 bytes a pixel for 15 classes): rounded up, a block of a
    large raster would hold half again as much as the whole of a 2048 px one. Margin blocks hold a byte a pixel,
    and smaller ones would run the last, snapped tile of a row in two blocks.
    """
    step = step_of(tile_size, margin)
    if block_size is None and mode == "blend":
        return max(1, DEFAULT_BLOCK_SIDE // step) * step
    block_size = DEFAULT_BLOCK_SIDE if block_size is None else block_size
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    return max(1, round(block_size / step)) * step


def fitted_tile_size(width: int, height: int, tile_size: int, margin: int) -> int:
    """The smallest tile side (a multiple of 32, at most ``tile_size``) covering the scene with no more tiles.

    ``tile_size`` tiles cover an axis of ``length`` pixels with ``n = ceil(length / step)`` of them; tiles of
    ``ceil(length / n) + 2 * margin`` pixels need no more, and compute less of the overlap between tiles.
    """
    step = step_of(tile_size, margin)

    def fitted(length: int) -> int:
        count = max(1, math.ceil(length / step))
        return math.ceil((math.ceil(length / count) + 2 * margin) / TILE_MULTIPLE) * TILE_MULTIPLE

    return min(tile_size, max(fitted(width), fitted(height)))


@dataclass(frozen=True)
class Tile:
    """A tile in map pixels: its read window and the part of the map it provides."""

    row: int
    """Row of the read window's top edge (may be negative: reads outside the scene are filled)."""
    col: int
    size: int
    keep_rows: Span
    keep_cols: Span
    order: tuple[int, int]
    """Painting order in margin mode (later wins): (column index, row index counted from the bottom)."""
    source_rows: Span | None = None
    """Tile rows that ``keep_rows`` shows (see :attr:`Tile1D.source`); None: one to one."""
    source_cols: Span | None = None

    def pixels(self, rows: Span, cols: Span, first: int = 0) -> tuple[slice | np.ndarray, slice | np.ndarray]:
        """Indices, into an array of this tile starting at tile pixel ``first``, of the map pixels ``rows`` x
        ``cols`` (inside the kept window)."""
        return (
            _tile_pixels(self.row, self.keep_rows, self.source_rows, rows, first),
            _tile_pixels(self.col, self.keep_cols, self.source_cols, cols, first),
        )


def _tile_pixels(origin: int, keep: Span, source: Span | None, part: Span, first: int) -> slice | np.ndarray:
    offset = part.start - keep.start
    if source is None or source.size == keep.size:
        start = (keep.start - origin if source is None else source.start) + offset - first
        return slice(start, start + part.size)
    # GDAL's nearest rule when a buffer of n pixels is written over a window of m: pixel i takes i * n // m.
    return source.start - first + np.arange(offset, offset + part.size) * source.size // keep.size


@dataclass(frozen=True)
class Block:
    """A rectangle of the output map; ``id`` is its rank in row-major order from the top-left."""

    id: int
    rows: Span
    cols: Span

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.size, self.cols.size


@dataclass(frozen=True)
class TilePlan:
    """Tiles and blocks of one scene for one stitching mode."""

    width: int
    height: int
    tile_size: int
    margin: int
    mode: StitchingMode
    block_size: int
    kept_windows: tuple[tuple[Span, ...], tuple[Span, ...]] | None = None
    """Margin mode: the column and row windows each tile's centre is written over
    (:func:`flair_detect_windows`); None: each tile keeps its centre, one to one."""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"empty scene {self.width}x{self.height}")
        step_of(self.tile_size, self.margin)
        if self.kept_windows is not None and self.mode != "margin":
            raise ValueError("kept windows apply to margin stitching only")

    @property
    def step(self) -> int:
        return self.tile_size - 2 * self.margin

    @cached_property
    def _cols(self) -> list[Tile1D]:
        if self.mode == "blend":
            return blend_tiles_1d(self.width, self.tile_size, self.margin)
        tiles = margin_tiles_1d(self.width, self.tile_size, self.margin)
        return self._over_kept_windows(tiles, 0)

    @cached_property
    def _rows(self) -> list[Tile1D]:
        """Tiles along the rows, as row spans (top edge = 0) in the mode's painting order."""
        if self.mode == "blend":
            return blend_tiles_1d(self.height, self.tile_size, self.margin)
        # Official rows are laid out from the bottom edge upward: mirror them into row coordinates.
        tiles = [
            Tile1D(self.height - (t.origin + self.tile_size), mirror(t.keep, self.height))
            for t in margin_tiles_1d(self.height, self.tile_size, self.margin)
        ]
        return self._over_kept_windows(tiles, 1)

    def _over_kept_windows(self, tiles: list[Tile1D], axis: int) -> list[Tile1D]:
        """``tiles`` with their centres written over ``kept_windows[axis]``, when given."""
        if self.kept_windows is None:
            return tiles
        windows = self.kept_windows[axis]
        if len(windows) != len(tiles):
            raise ValueError(f"{len(windows)} kept windows for {len(tiles)} tiles along axis {axis}")
        centre = Span(self.margin, self.margin + self.step)
        return [Tile1D(t.origin, window, centre) for t, window in zip(tiles, windows, strict=True)]

    @cached_property
    def _block_spans(self) -> tuple[list[Span], list[Span]]:
        """Block rows and columns, boundaries on the tile grid (margin mode: the official one)."""
        if self.mode == "margin":
            return (
                block_spans_1d(self.height, self.block_size, from_end=True),
                block_spans_1d(self.width, self.block_size),
            )
        # Boundaries on tile origins: a block then needs block/step + 1 tiles per side, not + 2.
        shift = self.margin % self.step
        return (
            block_spans_1d(self.height, self.block_size, shift=shift),
            block_spans_1d(self.width, self.block_size, shift=shift),
        )

    @cached_property
    def blocks(self) -> list[Block]:
        """Every block, row-major from the top-left."""
        row_spans, col_spans = self._block_spans
        spans = [(r, c) for r in row_spans for c in col_spans]
        return [Block(i, r, c) for i, (r, c) in enumerate(spans)]

    def block_ids_for(self, tile: Tile) -> list[int]:
        """Ids of the blocks that ``tile``'s kept window meets, found from the block grid (no per-tile table)."""
        row_spans, col_spans = self._block_spans
        rows = [i for i, span in enumerate(row_spans) if span.intersect(tile.keep_rows)]
        cols = [j for j, span in enumerate(col_spans) if span.intersect(tile.keep_cols)]
        return [i * len(col_spans) + j for i in rows for j in cols]

    @property
    def n_tiles(self) -> int:
        """Number of distinct tiles of the scene."""
        return len(self._rows) * len(self._cols)

    def all_tiles(self) -> list[Tile]:
        """Every distinct tile of the scene, in painting order."""
        return self._tiles(range(len(self._rows)), range(len(self._cols)))

    def tiles_for(self, block: Block) -> list[Tile]:
        """The tiles whose kept window meets ``block``, in painting order."""
        rows = [i for i, t in enumerate(self._rows) if t.keep.intersect(block.rows)]
        cols = [j for j, t in enumerate(self._cols) if t.keep.intersect(block.cols)]
        return self._tiles(rows, cols)

    def _tiles(self, rows, cols) -> list[Tile]:
        tiles = [
            Tile(
                row=self._rows[i].origin,
                col=self._cols[j].origin,
                size=self.tile_size,
                keep_rows=self._rows[i].keep,
                keep_cols=self._cols[j].keep,
                order=(j, i),
                source_rows=self._rows[i].source,
                source_cols=self._cols[j].source,
            )
            for i in rows
            for j in cols
        ]
        if self.mode == "margin":
            tiles.sort(key=lambda t: t.order)
        return tiles
