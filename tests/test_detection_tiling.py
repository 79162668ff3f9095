"""Tile and block grids of zone detection, checked against a brute-force re-statement of flair-detect's rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flairkit.data.scenes import reflect_indices
from flairkit.detection.tiling import (
    Span,
    Tile,
    TilePlan,
    blend_tiles_1d,
    block_spans_1d,
    fitted_tile_size,
    hann_window,
    resolve_block_size,
)

RES = 0.2
LEFT, TOP = 843_000.0, 6_519_000.0


def official_layout(
    width: int, height: int, tile: int, margin: int
) -> list[tuple[tuple[int, int], tuple[float, float, float, float]]]:
    """IGN's slicing, re-stated in map coordinates: [((read row, read col), kept box)] in write order.

    Origins run from min - margin to max + margin by tile - 2*margin in x (left to right) and y (bottom to
    top); tiles past max + margin are snapped back; duplicate kept boxes are dropped. Kept boxes are
    (left, bottom, right, top) in map coordinates, with the float noise of the official arithmetic.
    """
    right, bottom = LEFT + width * RES, TOP - height * RES
    size, geo_margin = tile * RES, margin * RES
    step = size - 2 * geo_margin
    seen, tiles = set(), []
    for x in np.arange(LEFT - geo_margin, right + geo_margin, step):
        for y in np.arange(bottom - geo_margin, TOP + geo_margin, step):
            if x + size > right + geo_margin:
                x = right + geo_margin - size
            if y + size > TOP + geo_margin:
                y = TOP + geo_margin - size
            kept = (x + geo_margin, y + geo_margin, min(x + size - geo_margin, right), min(y + size - geo_margin, TOP))
            key = tuple(round(v, 6) for v in kept)
            if key in seen:
                continue
            seen.add(key)
            tiles.append(((round((TOP - (y + size)) / RES), round((x - LEFT) / RES)), kept))
    return tiles


def official_tiles(width: int, height: int, tile: int, margin: int) -> list[tuple[tuple[int, int], tuple[Span, Span]]]:
    """:func:`official_layout` with kept boxes as pixel windows, rounded and clipped to the raster."""
    tiles = []
    for read, (left, bottom, right, top) in official_layout(width, height, tile, margin):
        rows = Span(max(round((TOP - top) / RES), 0), min(round((TOP - bottom) / RES), height))
        cols = Span(max(round((left - LEFT) / RES), 0), min(round((right - LEFT) / RES), width))
        tiles.append((read, (rows, cols)))
    return tiles


def official_winner(width: int, height: int, tile: int, margin: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Per pixel, the read window of the tile whose prediction the official code leaves there (last write wins)."""
    tiles = official_tiles(width, height, tile, margin)
    winner = np.full((height, width), -1, dtype=np.int64)
    for index, (_, (rows, cols)) in enumerate(tiles):
        winner[rows.start : rows.stop, cols.start : cols.stop] = index
    return winner, [read for read, _ in tiles]


def our_winner(plan: TilePlan, index: dict[tuple[int, int], int]) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """The same map produced block by block from our plan, tiles numbered by ``index`` of their read window."""
    winner = np.full((plan.height, plan.width), -1, dtype=np.int64)
    used: set[tuple[int, int]] = set()
    for block in plan.blocks:
        for tile in plan.tiles_for(block):
            rows, cols = tile.keep_rows.intersect(block.rows), tile.keep_cols.intersect(block.cols)
            used.add((tile.row, tile.col))
            winner[rows.start : rows.stop, cols.start : cols.stop] = index.get((tile.row, tile.col), -2)
    return winner, used


def _compare(width: int, height: int, tile: int, margin: int, block: int) -> None:
    expected, official_reads = official_winner(width, height, tile, margin)
    assert (expected >= 0).all(), "the official rule covers every pixel"
    assert len(set(official_reads)) == len(official_reads)
    plan = TilePlan(width, height, tile, margin, "margin", resolve_block_size(tile, margin, block))
    got, used = our_winner(plan, {read: i for i, read in enumerate(official_reads)})
    assert used == set(official_reads) == {(t.row, t.col) for t in plan.all_tiles()}
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("width", "height", "tile", "margin", "block"),
    [
        (1000, 1300, 512, 128, 512),  # flair-detect defaults, snapped last row and column
        (1024, 768, 512, 128, 1024),  # sides multiple of the step
        (257, 513, 512, 128, 256),  # one pixel past a step
        (700, 300, 512, 64, 384),  # other margin
        (96, 200, 64, 16, 64),
    ],
)
def test_margin_mode_reproduces_the_official_tiling(width, height, tile, margin, block):
    _compare(width, height, tile, margin, block)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(8, 48).map(lambda t: 2 * t),
    st.floats(0.0, 0.49),
    st.integers(1, 6),
    st.data(),
)
def test_margin_mode_matches_the_official_rule_for_any_shape(tile, margin_ratio, block_steps, data):
    margin = int(tile * margin_ratio)
    step = tile - 2 * margin
    width = data.draw(st.integers(step, 6 * tile), label="width")
    height = data.draw(st.integers(step, 6 * tile), label="height")
    _compare(width, height, tile, margin, block_steps * step)


def test_rasters_narrower_than_a_step_are_covered_by_clipped_snapped_tiles():
    plan = TilePlan(100, 40, 512, 128, "margin", 256)
    (tile,) = plan.all_tiles()
    # Snapped to end `margin` past the right edge, and to start `margin` above the top edge.
    assert (tile.row, tile.col) == (-128, 100 + 128 - 512)
    assert (tile.keep_rows, tile.keep_cols) == (Span(0, 40), Span(0, 100))


def test_margin_blocks_follow_the_official_rows_from_the_bottom():
    plan = TilePlan(600, 600, 512, 128, "margin", 512)
    rows = sorted({b.rows for b in plan.blocks}, key=lambda s: s.start)
    assert rows == [Span(0, 88), Span(88, 600)]
    assert block_spans_1d(600, 512) == [Span(0, 512), Span(512, 600)]


@pytest.mark.parametrize("length", [1, 30, 64, 100, 257, 1000])
def test_blend_tiles_cover_the_scene_with_margin_context(length):
    tile, margin = 64, 16
    tiles = blend_tiles_1d(length, tile, margin)
    covered = np.zeros(length, dtype=int)
    for t in tiles:
        covered[t.keep.start : t.keep.stop] += 1
        assert t.keep == Span(max(t.origin, 0), min(t.origin + tile, length))
    assert (covered >= 1).all()
    if length + 2 * margin > tile:
        # Scene borders sit `margin` pixels inside the first and last tiles, as interior pixels do.
        assert tiles[0].origin == -margin and tiles[-1].origin + tile == length + margin


def test_blocks_partition_the_map_and_gather_every_contributing_tile():
    for mode in ("margin", "blend"):
        plan = TilePlan(333, 250, 64, 16, mode, 96)
        cover = np.zeros((250, 333), dtype=int)
        for block in plan.blocks:
            cover[block.rows.start : block.rows.stop, block.cols.start : block.cols.stop] += 1
            tiles = plan.tiles_for(block)
            expected = [
                t
                for t in plan.all_tiles()
                if t.keep_rows.intersect(block.rows) is not None and t.keep_cols.intersect(block.cols) is not None
            ]
            assert sorted(tiles, key=lambda t: (t.row, t.col)) == sorted(expected, key=lambda t: (t.row, t.col))
        assert (cover == 1).all()
        assert [b.id for b in plan.blocks] == list(range(len(plan.blocks)))


def test_hann_window_is_smooth_symmetric_and_never_zero():
    window = hann_window(64)
    assert window.min() > 0 and window.max() <= 1
    np.testing.assert_allclose(window, window[::-1])
    # Half-overlapping Hann windows sum to one: interior weights need no renormalisation.
    np.testing.assert_allclose(window[:32] + window[32:], 1.0, rtol=1e-6)


def test_block_size_is_rounded_to_the_step():
    assert resolve_block_size(512, 128) == 2048
    assert resolve_block_size(512, 128, 1000) == 1024
    assert resolve_block_size(64, 16, 1) == 32
    assert resolve_block_size(2048, 128) == 1792  # nearest multiple, not 3584
    assert resolve_block_size(1536, 128) == 2560
    assert resolve_block_size(1536, 128, mode="blend") == 1280  # blend: at most 2048 px by default
    assert resolve_block_size(1536, 128, 3000, mode="blend") == 2560


@pytest.mark.parametrize(
    ("width", "height", "tile", "margin", "fitted"),
    [
        (5000, 5000, 2048, 128, 1952),  # 3 tiles per side either way: ceil(5000 / 3) + 256 -> 1952
        (4096, 2000, 2048, 128, 1632),  # the longer side decides: 3 tiles of 1366 + 256 -> 1632
        (2048, 2048, 2048, 128, 1280),  # 2 tiles per side: 1024 + 256
        (300, 200, 2048, 128, 576),  # one tile: 300 + 256 -> 576
        (1024, 1024, 512, 128, 512),  # flair-detect's grid on an aligned raster is already tight
        (1000, 1000, 512, 128, 512),
        (520, 520, 512, 128, 448),  # 3 tiles of 174 + 256 -> 448: fewer pixels, same count
    ],
)
def test_fitted_tile_size_is_the_smallest_multiple_of_32_needing_no_more_tiles(width, height, tile, margin, fitted):
    assert fitted_tile_size(width, height, tile, margin) == fitted
    assert (
        TilePlan(width, height, fitted, margin, "margin", 4096).n_tiles
        <= TilePlan(width, height, tile, margin, "margin", 4096).n_tiles
    )


def test_reflection_mirrors_without_repeating_the_edge():
    np.testing.assert_array_equal(reflect_indices(-3, 8, 5), [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1])
    np.testing.assert_array_equal(reflect_indices(-2, 3, 1), [0] * 5)


def test_blend_blocks_sit_on_tile_origins_so_few_tiles_run_twice():
    margin_plan = TilePlan(8192, 8192, 512, 128, "margin", 2048)
    blend_plan = TilePlan(8192, 8192, 512, 128, "blend", 2048)
    runs = {p.mode: sum(len(p.tiles_for(b)) for b in p.blocks) for p in (margin_plan, blend_plan)}
    assert runs["margin"] == margin_plan.n_tiles  # official grid: every tile runs once
    assert runs["blend"] <= 1.3 * blend_plan.n_tiles  # (2048/256 + 1)² / (2048/256)² per interior block
    starts = {b.cols.start for b in blend_plan.blocks} - {0}
    assert all((s + 128) % 256 == 0 for s in starts)


@pytest.mark.parametrize(("pixels", "window"), [(256, 257), (256, 258), (4, 7), (5, 4), (256, 100)])
def test_stretched_centres_follow_gdal_writes_into_windows_of_another_size(tmp_path, pixels, window):
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "width": window + 6, "height": 1, "count": 1, "dtype": "uint16"}
    with rasterio.open(tmp_path / "w.tif", "w+", **profile, transform=from_origin(LEFT, TOP, RES, RES)) as dst:
        dst.write(np.arange(pixels, dtype=np.uint16)[None, None], window=Window(3, 0, window, 1))
        written = dst.read(1)[0, 3 : 3 + window]
    tile = Tile(0, 0, pixels, Span(0, 1), Span(3, 3 + window), (0, 0), None, Span(0, pixels))
    _, cols = tile.pixels(Span(0, 1), Span(3, 3 + window))
    np.testing.assert_array_equal(np.arange(pixels)[cols], written)
    _, part = tile.pixels(Span(0, 1), Span(5, 3 + window))  # the part of the window inside a block
    np.testing.assert_array_equal(np.arange(pixels)[part], written[2:])


@pytest.mark.parametrize("mode", ["margin", "blend"])
def test_the_blocks_of_a_tile_come_from_the_block_grid_as_a_brute_force_search_finds_them(mode):
    plan = TilePlan(1000, 700, 128, 16, mode, 192)
    for tile in plan.all_tiles():
        brute = [b.id for b in plan.blocks if tile.keep_rows.intersect(b.rows) and tile.keep_cols.intersect(b.cols)]
        assert plan.block_ids_for(tile) == brute


def test_blend_keeps_shared_predictions_on_disk_whatever_the_raster_width(tmp_path):
    import torch

    from flairkit.detection.stitching import BlendAssembler, OutputBands

    bands = OutputBands(enabled=(0, 1, 2))
    kept_after_first_row = {}
    for width in (256, 1024):  # 2 and 8 blocks per row
        plan = TilePlan(width, 256, 64, 16, "blend", 128)
        assembler = BlendAssembler(plan, bands, "cpu", upcoming=plan.blocks, folder=tmp_path)
        per_row = len({b.cols.start for b in plan.blocks})
        for block in plan.blocks[:per_row]:
            assembler.start(block, None)
            for tile in plan.tiles_for(block):
                if not assembler.reuse(tile):
                    assembler.add(torch.rand(1, 3, 64, 64), [tile])
            assembler.finish()
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        # What the next row of blocks needs grows with the width: it is in files, not in memory.
        assert assembler.kept_size > 0 and sum(p.stat().st_size for p in files) == assembler.kept_size
        kept_after_first_row[width] = assembler.kept_size
        assembler.close()
        assert not any(tmp_path.iterdir())
    assert kept_after_first_row[1024] > 3 * kept_after_first_row[256]
