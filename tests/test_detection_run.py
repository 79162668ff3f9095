"""Zone detection end to end on small synthetic orthophotos (Lambert-93, 0.2 m)."""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.enums import Resampling
from rasterio.features import geometry_window, shapes
from rasterio.transform import from_origin
from rasterio.windows import Window
from shapely.geometry import shape
from torch import nn

from flairkit.config import load_config
from flairkit.data.scenes import ResolutionWarning
from flairkit.detection import vectorize
from flairkit.detection.resume import WorkDir
from flairkit.detection.run import detect
from flairkit.detection.stitching import BlendAssembler, OutputBands
from flairkit.detection.tiling import TilePlan, flair_detect_windows
from flairkit.errors import ConfigError, DataError, OutputExistsError
from flairkit.nomenclature import get_nomenclature
from test_detection_tiling import official_layout, official_tiles

NOMENCLATURE = get_nomenclature("15cl")
K = NOMENCLATURE.n_targets
TILE, MARGIN = 64, 16
BUILDING, WATER = NOMENCLATURE.names.index("building"), NOMENCLATURE.names.index("water")


def write_ortho(path: Path, data: np.ndarray, nodata: float | None = None, res: float = 0.2, crs="EPSG:2154") -> Path:
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "transform": from_origin(843_000.0, 6_519_000.0, res, res),
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
    }
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def smooth_ortho(height: int, width: int, bands: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = [
        np.sin(x / (9 + 4 * b)) + np.cos(y / (13 + 3 * b)) + 0.3 * rng.standard_normal((height, width))
        for b in range(bands)
    ]
    return np.clip(np.stack(base) * 60 + 128, 1, 255).astype(np.uint8)


def config(*overrides: str):
    return load_config(
        None,
        [
            "data.nomenclature=15cl",
            "data.normalization.mode=without",
            f"detect.tile_size={TILE}",
            f"detect.margin={MARGIN}",
            "detect.batch_size=8",
            *overrides,
        ],
    )


class PositionModel(nn.Module):
    """Class from the pixel's place in the tile and its red value: any tiling mistake changes the map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        rows = torch.arange(height).view(1, height, 1)
        cols = torch.arange(width).view(1, 1, width)
        index = (rows // 8 * 3 + cols // 8 + (x[:, 0] // 32).long()) % K
        logits = torch.nn.functional.one_hot(index, K).permute(0, 3, 1, 2).float() * 10
        # Disabled targets get the highest logit where they win: detection must never write them.
        logits[:, NOMENCLATURE.disabled] *= 2
        return logits


class ConstantModel(nn.Module):
    def __init__(self, target: int):
        super().__init__()
        self.register_buffer("logits", torch.linspace(-1, 1, K).roll(target - K + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        return self.logits.view(1, K, 1, 1).expand(batch, K, height, width).clone()


class TileBiasModel(nn.Module):
    """Building vs water from the red band plus a bias growing across each tile (a tile-edge artefact)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        logits = torch.full((batch, K, height, width), -20.0)
        bias = torch.linspace(-2, 2, height).view(1, height, 1) + torch.linspace(-2, 2, width).view(1, 1, width)
        logits[:, BUILDING] = (x[:, 0] - 128) / 64 + bias
        logits[:, WATER] = 0
        return logits


class RedBandModel(nn.Module):
    """One of four classes by level of the red band: large smooth regions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(NOMENCLATURE.enabled)[(x[:, 0] // 64).long()]
        return torch.nn.functional.one_hot(index, K).permute(0, 3, 1, 2).float()


class FailingModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model must not run when inputs are refused")


def read(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band)


@pytest.fixture(scope="module")
def ortho(tmp_path_factory) -> Path:
    return write_ortho(tmp_path_factory.mktemp("ortho") / "ortho.tif", smooth_ortho(250, 300))


def test_margin_map_equals_a_brute_force_run_of_the_official_algorithm(ortho, tmp_path):
    model = PositionModel()
    summary = detect(config("detect.output_codes=index"), model, [ortho], tmp_path / "map.tif", block_size=64)
    got = read(tmp_path / "map.tif")

    expected = np.full((250, 300), 255, dtype=np.uint8)
    with rasterio.open(ortho) as src:
        for (row, col), (rows, cols) in official_tiles(300, 250, TILE, MARGIN):
            tile = src.read(
                [1, 2, 3, 4, 5],
                window=Window(col, row, TILE, TILE),
                out_shape=(5, TILE, TILE),
                resampling=Resampling.bilinear,
                boundless=True,
                fill_value=0,
            )
            logits = model(torch.from_numpy(tile)[None].float())
            logits[:, NOMENCLATURE.disabled] = float("-inf")
            classes = logits.argmax(1)[0].numpy().astype(np.uint8)
            expected[rows.start : rows.stop, cols.start : cols.stop] = classes[
                rows.start - row : rows.stop - row, cols.start - col : cols.stop - col
            ]
    np.testing.assert_array_equal(got, expected)
    assert not np.isin(got, NOMENCLATURE.disabled).any()
    # Blocks follow the official grid, so no tile is computed twice.
    assert summary.maps[0].tiles_per_rank == [len(official_tiles(300, 250, TILE, MARGIN))]


def flair_detect_as_run(ortho: Path, model: nn.Module, out: Path) -> np.ndarray:
    """flair-detect's writes replayed with rasterio: each tile's centre written over the window that
    ``geometry_window(..., pixel_precision=6)`` gives for its float kept box, later tiles over earlier ones."""
    with rasterio.open(ortho) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8"}
        with rasterio.open(out, "w+", **profile, transform=src.transform, crs=src.crs) as dst:
            for (row, col), (left, bottom, right, top) in official_layout(src.width, src.height, TILE, MARGIN):
                tile = src.read([1, 2, 3, 4, 5], window=Window(col, row, TILE, TILE), boundless=True, fill_value=0)
                logits = model(torch.from_numpy(tile)[None].float())
                logits[:, NOMENCLATURE.disabled] = float("-inf")
                centre = logits.argmax(1)[0, MARGIN : TILE - MARGIN, MARGIN : TILE - MARGIN]
                box = [(left, top), (right, top), (right, bottom), (left, bottom), (left, top)]
                window = geometry_window(dst, [{"type": "Polygon", "coordinates": [box]}], pixel_precision=6)
                dst.write(centre.numpy().astype(np.uint8)[None], window=window)
            return dst.read(1)


def test_flair_detect_windows_reproduce_its_maps_as_it_runs(ortho, tmp_path):
    cols, rows = flair_detect_windows(300, 250, from_origin(843_000.0, 6_519_000.0, 0.2, 0.2), TILE, MARGIN)
    assert {w.size for w in cols + rows} >= {MARGIN * 2, MARGIN * 2 + 1}, "the case needs stretched windows"
    expected = flair_detect_as_run(ortho, PositionModel(), tmp_path / "official.tif")
    cfg = config("detect.output_codes=index", "detect.fit_tiles=false", "detect.flair_detect_windows=true")
    detect(cfg, PositionModel(), [ortho], tmp_path / "map.tif", block_size=64)
    np.testing.assert_array_equal(read(tmp_path / "map.tif"), expected)
    detect(config("detect.output_codes=index"), PositionModel(), [ortho], tmp_path / "one.tif", block_size=64)
    assert (read(tmp_path / "one.tif") != expected).mean() > 0.01  # one to one windows: another map


def test_flair_detect_windows_need_margin_stitching_and_a_north_up_raster(ortho, tmp_path):
    with pytest.raises(ConfigError, match=r"detect\.stitching=margin"):
        cfg = config("detect.stitching=blend", "detect.flair_detect_windows=true")
        detect(cfg, PositionModel(), [ortho], tmp_path / "a.tif")
    rotated = tmp_path / "rotated.tif"
    with rasterio.open(ortho) as src:
        profile = src.profile | {"transform": src.transform * Affine.rotation(10)}
        with rasterio.open(rotated, "w", **profile) as dst:
            dst.write(src.read())
    with pytest.raises(DataError, match=r"rotated\.tif.*north-up"):
        detect(config("detect.flair_detect_windows=true"), PositionModel(), [rotated], tmp_path / "b.tif")


def test_blend_of_a_constant_model_is_constant_up_to_the_scene_borders(ortho, tmp_path):
    cfg = config("detect.stitching=blend", "detect.probabilities=[water]", "detect.confidence=true")
    detect(cfg, ConstantModel(WATER), [ortho], tmp_path / "map.tif", block_size=96)
    classes = read(tmp_path / "map.tif")
    assert (classes == NOMENCLATURE.codes[WATER]).all()
    with rasterio.open(tmp_path / "map_scores.tif") as src:
        scores = src.read()
        assert src.descriptions == ("p(water)", "confidence")
    assert len(np.unique(scores[0])) == 1 and scores[0, 0, 0] > 0
    np.testing.assert_array_equal(scores[0], scores[1])


def test_blend_removes_the_seams_that_margin_stitching_leaves(tmp_path):
    y, x = np.mgrid[0:150, 0:300]
    ramp = (40 + 0.4 * x + 0.3 * y).astype(np.uint8)
    ortho = write_ortho(tmp_path / "ramp.tif", np.stack([ramp] * 5))
    kinks = {}
    for mode in ("margin", "blend"):
        cfg = config(f"detect.stitching={mode}", "detect.probabilities=[building]")
        detect(cfg, TileBiasModel(), [ortho], tmp_path / f"{mode}.tif", block_size=64)
        probability = read(tmp_path / f"{mode}_scores.tif").astype(int)
        # A seam is a jump: a second difference far above what a smooth field (and uint8 rounding) gives.
        kinks[mode] = max(np.abs(np.diff(probability, n=2, axis=axis)).max() for axis in (0, 1))
        assert (read(tmp_path / f"{mode}.tif") > 0).all(), "no nodata borders"
    assert kinks["margin"] >= 50
    assert kinks["blend"] <= 4


def test_blend_runs_a_tile_shared_by_blocks_once_and_gives_the_same_bytes(ortho, tmp_path):
    blend = ("detect.stitching=blend", "detect.probabilities=[building]", "detect.confidence=true")
    runs = {}
    for batch in (1, 2):  # batches of one tile keep shared predictions; larger ones recompute them
        cfg = config(*blend, f"detect.batch_size={batch}")
        runs[batch] = detect(cfg, TileBiasModel(), [ortho], tmp_path / f"b{batch}.tif", block_size=64)
        assert runs[batch].maps[0].blocks > 4
    plan = TilePlan(300, 250, TILE, MARGIN, "blend", 64)
    assert runs[1].maps[0].tiles_per_rank == [plan.n_tiles]
    assert runs[2].maps[0].tiles_per_rank == [sum(len(plan.tiles_for(b)) for b in plan.blocks)] > [plan.n_tiles]
    for name in ("b{}.tif", "b{}_scores.tif"):
        with rasterio.open(tmp_path / name.format(1)) as kept, rasterio.open(tmp_path / name.format(2)) as rerun:
            np.testing.assert_array_equal(kept.read(), rerun.read())


def test_blend_keeps_no_more_predictions_than_its_budget():
    plan = TilePlan(300, 250, TILE, MARGIN, "blend", 64)
    bands = OutputBands.for_nomenclature(NOMENCLATURE)
    tile_bytes = len(NOMENCLATURE.enabled) * TILE * TILE * 4
    for budget, expect_reuse in ((0, False), (2 * tile_bytes, True)):
        assembler = BlendAssembler(plan, bands, "cpu", upcoming=plan.blocks, kept_bytes=budget)
        reused = 0
        for block in plan.blocks:
            assembler.start(block, None)
            for tile in plan.tiles_for(block):
                if assembler.reuse(tile):
                    reused += 1
                else:
                    assembler.add(torch.zeros(1, K, TILE, TILE), [tile])
                assert assembler.kept_size <= budget
            assembler.finish()
        assert (reused > 0) == expect_reuse


def test_missing_pixels_stay_nodata_and_their_tiles_are_skipped(tmp_path):
    data = smooth_ortho(200, 240)
    data[:, 40:200, 0:150] = 0
    data[:, :, 230:] = 0
    declared = write_ortho(tmp_path / "declared.tif", data, nodata=0)
    undeclared = write_ortho(tmp_path / "undeclared.tif", data)
    missing = (data == 0).all(axis=0)
    cfg = config("detect.probabilities=[building]")
    summary = detect(cfg, PositionModel(), [declared], tmp_path / "a.tif", block_size=64)
    classes = read(tmp_path / "a.tif")
    assert (classes[missing] == 0).all() and (classes[~missing] > 0).all()
    with rasterio.open(tmp_path / "a_scores.tif") as src:
        np.testing.assert_array_equal(src.dataset_mask() == 0, missing)
    assert summary.maps[0].nodata_km2 == pytest.approx(missing.sum() * 0.04 / 1e6)
    cfg = config("detect.all_zero_is_nodata=false")  # all-zero pixels classified: every tile runs
    full = detect(cfg, PositionModel(), [undeclared], tmp_path / "b.tif", block_size=64)
    assert summary.maps[0].tiles_per_rank[0] < full.maps[0].tiles_per_rank[0]
    detect(config("detect.nodata=0"), PositionModel(), [undeclared], tmp_path / "c.tif", block_size=64)
    np.testing.assert_array_equal(read(tmp_path / "c.tif"), classes)


def test_outputs_keep_the_grid_and_carry_colours_style_and_cog(ortho, tmp_path):
    detect(config("detect.cog=true"), PositionModel(), [ortho], tmp_path / "map.tif")
    with rasterio.open(ortho) as src_in, rasterio.open(tmp_path / "map.tif") as src:
        assert src.crs == src_in.crs and src.transform == src_in.transform
        assert (src.count, src.dtypes[0], src.nodata) == (1, "uint8", 0)
        assert src.compression.name.lower() == "lzw"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        building = NOMENCLATURE.targets[BUILDING]
        assert src.colormap(1)[building.code] == (219, 14, 154, 255)
    style = (tmp_path / "map.qml").read_text()
    assert 'type="paletted"' in style and 'label="1 - building"' in style and "#db0e9a" in style
    assert "clear cut" not in style  # disabled classes never appear


def test_large_cog_has_nearest_overviews_and_512_tiles(tmp_path):
    ortho = write_ortho(tmp_path / "big.tif", smooth_ortho(600, 700, bands=5, seed=3))
    cfg = config("detect.cog=true", "detect.confidence=true")
    detect(cfg, ConstantModel(BUILDING), [ortho], tmp_path / "map.tif")
    for name in ("map.tif", "map_scores.tif"):
        with rasterio.open(tmp_path / name) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert src.overviews(1) == [2]
            assert src.block_shapes[0] == (512, 512)
    assert (read(tmp_path / "map.tif") == NOMENCLATURE.codes[BUILDING]).all()


def test_polygons_are_not_cut_by_processing_windows(tmp_path, monkeypatch):
    y, x = np.mgrid[0:150, 0:200]
    red = (128 + 120 * np.sin(x / 15) * np.cos(y / 11)).astype(np.uint8)
    ortho = write_ortho(tmp_path / "blobs.tif", np.stack([red] * 5))
    monkeypatch.setattr(vectorize, "WINDOW", 48)
    detect(config("detect.vectorize=true"), RedBandModel(), [ortho], tmp_path / "map.tif")
    classes = read(tmp_path / "map.tif")
    with rasterio.open(tmp_path / "map.tif") as src:
        expected = [(shape(g), v) for g, v in shapes(classes, transform=src.transform)]
    with fiona.open(tmp_path / "map.gpkg") as layer:
        features = list(layer)
    assert len(features) == len(expected) > 20
    assert sum(f["properties"]["area_m2"] for f in features) == pytest.approx(200 * 150 * 0.04)
    by_area = sorted((round(p.area, 6), int(v)) for p, v in expected)
    assert sorted((round(f["properties"]["area_m2"], 6), f["properties"]["value"]) for f in features) == by_area

    cfg = config("detect.vectorize=true", "detect.min_polygon_area=20", "detect.simplify_tolerance=0.3")
    detect(cfg, RedBandModel(), [ortho], tmp_path / "filtered.tif")
    with fiona.open(tmp_path / "filtered.gpkg") as layer:
        areas = [f["properties"]["area_m2"] for f in layer]
    assert min(areas) >= 20 and len(areas) < len(features)


def test_existing_outputs_are_refused_and_replaced_only_on_request(ortho, tmp_path):
    target = tmp_path / "map.tif"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        detect(config(), FailingModel(), [ortho], target)
    assert target.read_bytes() == b"precious"
    detect(config(), ConstantModel(WATER), [ortho], target, overwrite=True)
    assert (read(target) == NOMENCLATURE.codes[WATER]).all()
    # A finished map is skipped, not recomputed, by --resume.
    summary = detect(config(), FailingModel(), [ortho], target, resume=True)
    assert summary.maps[0].skipped


def test_an_interrupted_run_needs_resume_or_overwrite(ortho, tmp_path):
    target = tmp_path / "map.tif"
    WorkDir(target).create({"left": "by an interrupted run"})
    with pytest.raises(OutputExistsError, match="--resume"):
        detect(config(), FailingModel(), [ortho], target)
    with pytest.raises(DataError, match="different"):
        detect(config(), ConstantModel(WATER), [ortho], target, resume=True)
    detect(config(), ConstantModel(WATER), [ortho], target, overwrite=True)
    assert target.exists() and not WorkDir(target).path.exists()


def test_inputs_are_checked_before_any_work(tmp_path):
    data = smooth_ortho(64, 64)
    no_crs = write_ortho(tmp_path / "nocrs.tif", data, crs=None)
    with pytest.raises(DataError, match=r"nocrs\.tif.*gdal_edit"):
        detect(config(), FailingModel(), [no_crs], tmp_path / "out.tif")
    rgb = write_ortho(tmp_path / "rgb.tif", data[:3])
    with pytest.raises(DataError, match=r"rgb\.tif: has 3 band\(s\).*data\.channels"):
        detect(config(), FailingModel(), [rgb], tmp_path / "out.tif")
    wide = write_ortho(tmp_path / "uint16.tif", data.astype(np.uint16))
    with pytest.raises(DataError, match="8-bit"):
        detect(config(), FailingModel(), [wide], tmp_path / "out.tif")
    good = write_ortho(tmp_path / "good.tif", data)
    with pytest.raises(DataError, match=r"missing\.tif"):
        detect(config(), FailingModel(), [good, tmp_path / "missing.tif"], tmp_path / "out")
    assert not (tmp_path / "out.tif").exists() and not (tmp_path / "out").exists()


def test_unusual_resolution_warns(tmp_path):
    coarse = write_ortho(tmp_path / "coarse.tif", smooth_ortho(64, 64), res=0.5)
    with pytest.warns(ResolutionWarning, match="0.5"):
        detect(config(), ConstantModel(WATER), [coarse], tmp_path / "map.tif")


def test_model_and_settings_mismatches_are_config_errors(ortho, tmp_path):
    class Wrong(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 13, *x.shape[2:])

    with pytest.raises(ConfigError, match="nomenclature"):
        detect(config(), Wrong(), [ortho], tmp_path / "map.tif")
    with pytest.raises(ConfigError, match="clear cut"):
        detect(config("detect.probabilities=[clear cut]"), FailingModel(), [ortho], tmp_path / "map.tif")
    with pytest.raises(ConfigError, match="metadata"):
        detect(config("data.metadata=true"), FailingModel(), [ortho], tmp_path / "map.tif")
    assert not (tmp_path / "map.tif").exists()


def test_several_inputs_give_one_named_map_each(tmp_path):
    folder = tmp_path / "orthos"
    folder.mkdir()
    write_ortho(folder / "a.tif", smooth_ortho(70, 90, seed=1))
    write_ortho(folder / "b.tif", smooth_ortho(90, 70, seed=2))
    summary = detect(config(), ConstantModel(BUILDING), [folder], tmp_path / "maps")
    assert [m.output.name for m in summary.maps] == ["a_landcover.tif", "b_landcover.tif"]
    assert read(tmp_path / "maps" / "b_landcover.tif").shape == (90, 70)
    assert summary.area_km2 == pytest.approx((70 * 90 + 90 * 70) * 0.04 / 1e6)
    with pytest.raises(ConfigError, match="folder"):
        detect(config(), FailingModel(), [folder], tmp_path / "one.tif")


def test_evaluation_against_labels_writes_flair_metrics(ortho, tmp_path):
    labels = np.full((1, 250, 300), NOMENCLATURE.codes[WATER], dtype=np.uint8)
    labels[:, :, 150:] = NOMENCLATURE.codes[BUILDING]
    label_path = write_ortho(tmp_path / "labels.tif", labels)
    summary = detect(config(), ConstantModel(WATER), [ortho], tmp_path / "map.tif", evaluate_labels=label_path)
    metrics = summary.maps[0].metrics
    assert metrics.overall_accuracy == pytest.approx(50.0)
    assert "OA 50.00" in str(summary) and "km²/h" in str(summary) and "water" in str(summary)
    saved = json.loads((tmp_path / "map_evaluation" / "metrics" / "metrics.json").read_text())
    assert saved["Avg_metrics"][1] == pytest.approx(50.0)
    off_grid = write_ortho(tmp_path / "small_labels.tif", labels[:, :100, :100])
    with pytest.raises(DataError, match="grid"):
        detect(config(), FailingModel(), [ortho], tmp_path / "m2.tif", evaluate_labels=off_grid)
