"""Zone detection with a U-T&T model: Sentinel-2 acquisitions lists, per-tile super-patches (any CRS), per-tile
cloud filtering and monthly averages, and the detection pipeline feeding them to the model."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import Resampling
from rasterio.transform import Affine, from_origin
from rasterio.warp import reproject
from torch import nn

from conftest import TINY_UTAE
from flairkit.cli.detect import input_overrides
from flairkit.config.loading import config_from_dict, deep_merge
from flairkit.config.schema import FlairConfig, SentinelConfig
from flairkit.data.assembly import open_scene
from flairkit.data.scenes import Span, inspect_input
from flairkit.data.sentinel import day_offsets, filter_cloudy_dates, monthly_average
from flairkit.data.series import SeriesReader, inspect_series, read_acquisitions
from flairkit.data.transforms import Normalizer
from flairkit.detection.jobs import tile_plan
from flairkit.detection.run import detect
from flairkit.detection.settings import resolve_settings
from flairkit.errors import ConfigError, DataError
from flairkit.models.utt import build_utt_model
from flairkit.synth.sentinel import write_ortho_series
from ranks import run_two_ranks

ORIGIN = (843_000.0, 6_519_000.0)
"""Top-left corner of the aerial zone (Lambert-93), on the 10 m grid."""
AERIAL_SIZE = (320, 448)
"""Rows, columns of the aerial zone at 0.2 m (64 x 90 m)."""
S2_BUFFER = 12
"""Sentinel-2 pixels around the zone in the test series."""
SAT = 16
TILE, MARGIN = 128, 32
DATES = [dt.date(2021, 3, 2), dt.date(2021, 3, 20), dt.date(2021, 5, 4), dt.date(2021, 7, 9), dt.date(2021, 7, 30)]
CLOUDY = 2
"""Index of the date whose west half is under clouds."""


def s2_shape() -> tuple[int, int]:
    rows, cols = (round(side * 0.2 / 10) + 2 * S2_BUFFER for side in AERIAL_SIZE)
    return rows, cols


def s2_transform() -> Affine:
    return from_origin(ORIGIN[0] - S2_BUFFER * 10, ORIGIN[1] + S2_BUFFER * 10, 10, 10)


def series_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(T, 10, H, W) uint16 reflectances, distinct everywhere, and (T, 2, H, W) masks: clouds over the west half of
    date ``CLOUDY``, snow over a few pixels of the first date."""
    rng = np.random.default_rng(seed)
    rows, cols = s2_shape()
    data = rng.integers(100, 60000, (len(DATES), 10, rows, cols), dtype=np.uint16)
    masks = np.zeros((len(DATES), 2, rows, cols), dtype=np.uint8)
    masks[CLOUDY, 1, :, : cols // 2] = 90
    masks[0, 0, :4, :4] = 100
    return data, masks


def write_raster(path: Path, data: np.ndarray, transform: Affine, crs: str = "EPSG:2154") -> Path:
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
    ) as dst:
        dst.write(data)
    return path


def write_series(folder: Path, data: np.ndarray, masks: np.ndarray | None, transform: Affine) -> Path:
    entries = []
    for i, date in enumerate(DATES):
        entry = {"date": date.isoformat(), "path": f"S2_{date:%Y%m%d}.tif"}
        write_raster(folder / entry["path"], data[i], transform)
        if masks is not None:
            entry["mask"] = f"S2_{date:%Y%m%d}_MASK.tif"
            write_raster(folder / entry["mask"], masks[i], transform)
        entries.append(entry)
    path = folder / "acquisitions.json"
    path.write_text(json.dumps({"acquisitions": entries}), encoding="utf-8")
    return path


def write_aerial(path: Path, seed: int = 1) -> Path:
    data = np.random.default_rng(seed).integers(1, 256, (5, *AERIAL_SIZE), dtype=np.uint8)
    return write_raster(path, data, from_origin(*ORIGIN, 0.2, 0.2))


def utt_config(acquisitions: Path | None, **detect: Any) -> FlairConfig:
    base = {
        "data": {
            "channels": [1, 2, 3, 4, 5],
            "nomenclature": "13cl",
            "normalization": {"mode": "scaling"},
            "sentinel": {"enabled": True, "sat_patch_size": SAT, "filter_clouds": True},
        },
        "model": {
            "arch": "unet",
            "encoder": "resnet18",
            "encoder_weights": None,
            "multimodal": True,
            "utae": TINY_UTAE,
        },
        "detect": {"tile_size": TILE, "margin": MARGIN, "batch_size": 1, "output_codes": "index", "device": "cpu"},
    }
    if acquisitions is not None:
        base["detect"]["sentinel2"] = str(acquisitions)
    return config_from_dict(deep_merge(base, {"detect": detect}))


def tiny_utt(config: FlairConfig) -> nn.Module:
    torch.manual_seed(0)
    return build_utt_model(config, pretrained_encoder=False).eval()


@pytest.fixture
def zone(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    data, masks = series_arrays()
    s2 = tmp_path / "s2"
    s2.mkdir()
    return write_aerial(tmp_path / "ortho.tif"), write_series(s2, data, masks, s2_transform()), data, masks


# --- acquisitions lists ---------------------------------------------------------------------------------------------


def test_json_csv_and_stac_lists_give_the_same_acquisitions(tmp_path: Path) -> None:
    data, masks = series_arrays()
    listed = read_acquisitions(write_series(tmp_path, data, masks, s2_transform()))
    assert [a.date for a in listed] == DATES
    assert all(a.data.is_file() and a.mask is not None and a.mask.is_file() for a in listed)
    rows = ["path,date,mask"] + [f"{a.data.name},{a.date},{a.mask.name}" for a in reversed(listed)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert read_acquisitions(tmp_path / "list.csv") == listed  # sorted by date whatever the order
    features = [
        {
            "type": "Feature",
            "properties": {"datetime": f"{a.date}T10:58:52Z"},
            "assets": {"data": {"href": a.data.name}, "mask": {"href": a.mask.name}},
        }
        for a in listed
    ]
    (tmp_path / "stac.json").write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    assert read_acquisitions(tmp_path / "stac.json") == listed
    bare = [{"date": str(a.date), "path": a.data.name} for a in listed]
    (tmp_path / "bare.json").write_text(json.dumps(bare), encoding="utf-8")
    assert [(a.date, a.data, a.mask) for a in read_acquisitions(tmp_path / "bare.json")] == [
        (a.date, a.data, None) for a in listed
    ]


def _write_list(folder: Path, entries: Any, name: str = "list.json") -> Path:
    path = folder / name
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("entries", "name", "message"),
    [
        ([{"date": "2021-04-15", "path": "missing.tif"}], "list.json", r"acquisition 1: .*missing\.tif: no such file"),
        (
            [{"date": "15/04/2021", "path": "a.tif"}],
            "list.json",
            r"acquisition 1: date '15/04/2021' is not a YYYY-MM-DD",
        ),
        ([{"path": "a.tif"}], "list.json", r"acquisition 1: date None is not"),
        ([{"date": "2021-04-15"}], "list.json", r"acquisition 1: no raster path"),
        ([{"date": "2021-04-15", "path": "a.tif", "mask": "nomask.tif"}], "list.json", r"nomask\.tif: no such file"),
        ([], "list.json", "lists no acquisition"),
        ("{not json", "list.json", "not valid JSON"),
        ({"items": []}, "list.json", "expected"),
        ("file,when\na.tif,2021-04-15\n", "list.csv", "CSV header must name date and path"),
    ],
)
def test_bad_lists_name_the_file_and_the_fix(tmp_path: Path, entries: Any, name: str, message: str) -> None:
    write_raster(tmp_path / "a.tif", np.ones((10, 4, 4), np.uint16), s2_transform())
    with pytest.raises(DataError, match=message):
        read_acquisitions(_write_list(tmp_path, entries, name))


def test_missing_list_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="acquisitions list not found"):
        read_acquisitions(tmp_path / "nothing.json")
    with pytest.raises(ConfigError, match=r"neither \.json nor \.csv"):
        read_acquisitions(_write_list(tmp_path, "a", "list.txt"))


def test_band_counts_and_crs_are_checked(tmp_path: Path) -> None:
    config = SentinelConfig(enabled=True, sat_patch_size=SAT)
    write_raster(tmp_path / "four.tif", np.ones((4, 4, 4), np.uint16), s2_transform())
    with pytest.raises(DataError, match=r"four\.tif: has 4 band\(s\) but a Sentinel-2 date needs 10"):
        inspect_series(_write_list(tmp_path, [{"date": "2021-04-15", "path": "four.tif"}]), config)
    write_raster(tmp_path / "ten.tif", np.ones((10, 4, 4), np.uint16), s2_transform())
    write_raster(tmp_path / "mask.tif", np.ones((1, 4, 4), np.uint8), s2_transform())
    entries = [{"date": "2021-04-15", "path": "ten.tif", "mask": "mask.tif"}]
    with pytest.raises(DataError, match=r"mask\.tif: has 1 band\(s\) but a Sentinel-2 mask needs 2"):
        inspect_series(_write_list(tmp_path, entries), config)
    with rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", width=4, height=4, count=10, dtype="uint16") as dst:
        dst.write(np.ones((10, 4, 4), np.uint16))
    with pytest.raises(DataError, match=r"nocrs\.tif: has no coordinate reference system"):
        inspect_series(_write_list(tmp_path, [{"date": "2021-04-15", "path": "nocrs.tif"}]), config)


def test_config_errors_name_the_key_and_the_fix(zone) -> None:
    _, acquisitions, _, _ = zone
    with pytest.raises(ConfigError, match=r"reads a Sentinel-2 series for every tile.*--input s2=FILE"):
        resolve_settings(utt_config(None), None, None)
    with pytest.raises(ConfigError, match=r"detect.tta=flips.*set detect.tta=none"):
        resolve_settings(utt_config(acquisitions, tta="flips"), None, None)
    with pytest.raises(ConfigError, match=r"detect.tile_size=1024 covers 20.48 Sentinel-2 pixels.*at most 800"):
        resolve_settings(utt_config(acquisitions, tile_size=1024), None, None)
    with pytest.raises(ConfigError, match=r"detect.inputs.s2: .*detect.sentinel2"):
        resolve_settings(utt_config(acquisitions, inputs={"s2": str(acquisitions)}), None, None)
    aerial = config_from_dict({"detect": {"sentinel2": str(acquisitions)}})
    with pytest.raises(ConfigError, match=r"reads no Sentinel-2 \(model.multimodal=false\)"):
        resolve_settings(aerial, None, None)


def test_input_s2_sets_detect_sentinel2() -> None:
    assert input_overrides(["s2=series/acquisitions.json", "rgb=rvb.tif"], False) == [
        'detect.sentinel2="series/acquisitions.json"',
        'detect.inputs.rgb="rvb.tif"',
    ]


def test_a_series_away_from_the_map_is_an_error(tmp_path: Path) -> None:
    data, masks = series_arrays()
    (tmp_path / "s2").mkdir()
    far = s2_transform() @ Affine.translation(10_000, 0)
    acquisitions = write_series(tmp_path / "s2", data, masks, far)
    config = utt_config(acquisitions)
    with pytest.raises(DataError, match=r"acquisitions\.json: no acquisition covers .*ortho\.tif"):
        detect(config, tiny_utt(config), [write_aerial(tmp_path / "ortho.tif")], tmp_path / "map.tif")


def test_synthetic_series_of_an_orthophoto_is_a_valid_list_over_it(tmp_path: Path) -> None:
    codes = np.full((1, 250, 300), 10, np.uint8)  # herbaceous vegetation
    codes[0, :, 150:] = 11  # agricultural land
    labels = write_raster(tmp_path / "LABELS_0.tif", codes, from_origin(*ORIGIN, 0.2, 0.2))
    ortho = tmp_path / "ORTHO_0.tif"
    listed = write_ortho_series(ortho, labels, seed=3, index=0, buffer=9)
    assert listed == tmp_path / "ORTHO_0_S2" / "acquisitions.json"
    series = inspect_series(listed, SentinelConfig(enabled=True, sat_patch_size=SAT))
    assert 20 <= len(series.acquisitions) <= 60 and all(a.mask is not None for a in series.acquisitions)
    with rasterio.open(series.acquisitions[0].data) as src:
        assert (src.count, src.dtypes[0], src.crs.to_epsg()) == (10, "uint16", 2154)
        assert src.transform == from_origin(ORIGIN[0] - 90, ORIGIN[1] + 90, 10, 10)
        assert (src.width, src.height) == (6 + 18, 5 + 18)
    (tmp_path / "copy").mkdir()
    again = write_ortho_series(tmp_path / "copy" / "ORTHO_0.tif", labels, seed=3, index=0, buffer=9)
    assert again.read_bytes() == listed.read_bytes()
    first = series.acquisitions[0].data.name
    assert (again.parent / first).read_bytes() == (listed.parent / first).read_bytes()


# --- per-tile super-patches -----------------------------------------------------------------------------------------


def expected_sample(data: np.ndarray, masks: np.ndarray, row: int, col: int, config: SentinelConfig):
    """The tile's super-patch cut from the in-memory series as FLAIR #2 cuts it around a centroid, filtered and
    averaged with the training functions."""
    x = ORIGIN[0] + (col + TILE / 2) * 0.2
    y = ORIGIN[1] - (row + TILE / 2) * 0.2
    left, top = s2_transform().c, s2_transform().f
    centre = (int((top - y) // 10), int((x - left) // 10))
    window = np.s_[:, :, centre[0] - SAT // 2 : centre[0] + SAT // 2, centre[1] - SAT // 2 : centre[1] + SAT // 2]
    series, crop_masks = data[window].astype(np.float32), masks[window]
    offsets = day_offsets([(d.month, d.day) for d in DATES], config.reference_date)
    if config.filter_clouds:
        series, offsets = filter_cloudy_dates(series, crop_masks, offsets, config.cloud_probability, config.max_cover)
    if config.monthly_average:
        series, offsets = monthly_average(series, offsets, config.reference_date)
    return series.astype(np.float32), offsets


def tiles_of(config: FlairConfig, ortho: Path) -> list[tuple[int, int]]:
    settings = resolve_settings(config, None, None)
    raster = inspect_input(ortho, settings.channels, settings.nodata, settings.all_zero_is_nodata)
    plan = tile_plan(settings, raster)
    return sorted({(t.row, t.col) for block in plan.blocks for t in plan.tiles_for(block)})


@pytest.mark.parametrize("average", [False, True])
def test_each_tile_reads_its_own_super_patch_filtered_per_tile(zone, average: bool) -> None:
    ortho, acquisitions, data, masks = zone
    config = utt_config(acquisitions)
    config.data.sentinel.monthly_average = average
    series = inspect_series(acquisitions, config.data.sentinel)
    tiles = tiles_of(config, ortho)
    with rasterio.open(ortho) as src, SeriesReader(series, src.crs, src.transform, src.width, src.height) as reader:
        lengths = set()
        for row, col in tiles:
            sample = reader.sample(row, col, TILE)
            expected, offsets = expected_sample(data, masks, row, col, config.data.sentinel)
            np.testing.assert_array_equal(sample.series, expected)
            np.testing.assert_array_equal(sample.dates, offsets)
            lengths.add(len(sample.dates))
    # West tiles lose the cloudy date, east tiles keep it: filtering is decided per tile.
    assert lengths == ({2, 3} if average else {len(DATES) - 1, len(DATES)})  # May is the cloudy month


def test_pixels_outside_the_series_read_as_zero(tmp_path: Path) -> None:
    data, masks = series_arrays()
    cut = 10  # the series starts 10 pixels right of and below the test grid's corner: less than half a super-patch
    (tmp_path / "s2").mkdir()
    shifted = s2_transform() @ Affine.translation(cut, cut)
    acquisitions = write_series(tmp_path / "s2", data[:, :, cut:, cut:], masks[:, :, cut:, cut:], shifted)
    config = utt_config(acquisitions, tile_size=TILE)
    config.data.sentinel.filter_clouds = False
    series = inspect_series(acquisitions, config.data.sentinel)
    map_crs, map_transform = rasterio.crs.CRS.from_epsg(2154), from_origin(*ORIGIN, 0.2, 0.2)
    with SeriesReader(series, map_crs, map_transform, *AERIAL_SIZE[::-1]) as reader:
        sample = reader.sample(-MARGIN, -MARGIN, TILE)
    expected, _ = expected_sample(data, masks, -MARGIN, -MARGIN, config.data.sentinel)
    top = cut - (S2_BUFFER + int((-MARGIN + TILE / 2) * 0.2 // 10) - SAT // 2)
    assert 0 < top < SAT
    expected[:, :, :top] = 0
    expected[:, :, :, :top] = 0
    np.testing.assert_array_equal(sample.series, expected)


def test_tile_order_does_not_change_any_tile_input(zone) -> None:
    ortho, acquisitions, _, _ = zone
    config = utt_config(acquisitions)
    config.data.sentinel.monthly_average = True
    series = inspect_series(acquisitions, config.data.sentinel)
    tiles = tiles_of(config, ortho)
    offsets = series.offsets.copy()
    with rasterio.open(ortho) as src:
        crs, transform = src.crs, src.transform

    def read(order: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        with SeriesReader(series, crs, transform, *AERIAL_SIZE[::-1]) as reader:
            samples = {t: reader.sample(*t, TILE) for t in order}
        return {t: (sample.series, sample.dates) for t, sample in samples.items()}

    forward, backward = read(tiles), read(tiles[::-1])
    shuffled = read([tiles[i] for i in np.random.default_rng(0).permutation(len(tiles))])
    for tile in tiles:
        for other in (backward, shuffled):
            np.testing.assert_array_equal(forward[tile][0], other[tile][0])
            np.testing.assert_array_equal(forward[tile][1], other[tile][1])
    assert len({len(dates) for _, dates in forward.values()}) > 1, "tiles should differ in their kept dates"
    np.testing.assert_array_equal(series.offsets, offsets)


def test_every_date_cloudy_keeps_the_least_covered_one(tmp_path: Path) -> None:
    data, masks = series_arrays()
    masks[:, 1] = 100
    masks[3, 1, :, :] = 70  # the least covered everywhere: still cloudy but kept as the documented fallback
    masks[3, 1, ::2] = 0
    (tmp_path / "s2").mkdir()
    acquisitions = write_series(tmp_path / "s2", data, masks, s2_transform())
    config = utt_config(acquisitions)
    series = inspect_series(acquisitions, config.data.sentinel)
    map_crs, map_transform = rasterio.crs.CRS.from_epsg(2154), from_origin(*ORIGIN, 0.2, 0.2)
    with (
        SeriesReader(series, map_crs, map_transform, *AERIAL_SIZE[::-1]) as reader,
        pytest.warns(RuntimeWarning, match="keeping its least covered date"),
    ):
        sample = reader.sample(0, 0, TILE)
    assert sample.series.shape[0] == 1
    assert sample.dates.tolist() == day_offsets([(DATES[3].month, DATES[3].day)]).tolist()


def test_series_in_another_crs_reads_the_same_footprint(tmp_path: Path) -> None:
    """A series in UTM 31N read for a Lambert-93 map: the super-patch is the rasterio reprojection of the UTM raster
    onto the map's 10 m grid, and a field linear in Lambert-93 coordinates comes back where it was."""
    rows, cols = s2_shape()
    transform = s2_transform()
    yy, xx = np.mgrid[0:rows, 0:cols]
    field = (1000 + 40 * xx + 7 * yy).astype(np.float32)  # linear in Lambert-93 x, y
    data = np.repeat(field[None], 10, axis=0)
    utm_transform = Affine(10, 0, 0, 0, -10, 0)
    with rasterio.open(write_raster(tmp_path / "l93.tif", data, transform)) as src:
        from rasterio.warp import calculate_default_transform

        utm_transform, width, height = calculate_default_transform(
            src.crs, "EPSG:32631", src.width, src.height, *src.bounds, resolution=10
        )
        utm = np.zeros((10, height, width), np.float32)
        reproject(
            data,
            utm,
            src_transform=transform,
            src_crs=src.crs,
            dst_transform=utm_transform,
            dst_crs="EPSG:32631",
            resampling=Resampling.bilinear,
        )
    write_raster(tmp_path / "utm.tif", utm, utm_transform, crs="EPSG:32631")
    acquisitions = _write_list(tmp_path, [{"date": "2021-04-15", "path": "utm.tif"}])
    config = utt_config(acquisitions)
    series = inspect_series(acquisitions, config.data.sentinel)
    map_transform = from_origin(*ORIGIN, 0.2, 0.2)
    map_crs = rasterio.crs.CRS.from_epsg(2154)
    with SeriesReader(series, map_crs, map_transform, AERIAL_SIZE[1], AERIAL_SIZE[0]) as reader:
        grid = reader.grid
        assert grid.a == 10 and grid.e == -10 and grid.c % 10 == 0 and grid.f % 10 == 0
        for row, col in [(0, 0), (96, 160), (192, 320)]:
            sample = reader.sample(row, col, TILE).series[0]
            # Where the tile's centre is, independently: the Lambert-93 10 m pixel holding it.
            x, y = ORIGIN[0] + (col + TILE / 2) * 0.2, ORIGIN[1] - (row + TILE / 2) * 0.2
            top = int((grid.f - y) // 10) - SAT // 2
            left = int((x - grid.c) // 10) - SAT // 2
            expected = np.zeros((10, SAT, SAT), np.float32)
            reproject(
                utm,
                expected,
                src_transform=utm_transform,
                src_crs="EPSG:32631",
                dst_transform=grid @ Affine.translation(left, top),
                dst_crs=map_crs,
                resampling=Resampling.bilinear,
            )
            np.testing.assert_allclose(sample, expected, rtol=0, atol=0.5)
            # The field in Lambert-93 pixels of the original series: same footprint, within resampling error.
            r0, c0 = round((transform.f - (grid.f - top * 10)) / 10), round((grid.c + left * 10 - transform.c) / 10)
            np.testing.assert_allclose(sample[0], field[r0 : r0 + SAT, c0 : c0 + SAT], rtol=0, atol=2.0)


# --- detection ------------------------------------------------------------------------------------------------------


class Recorder(nn.Module):
    """A U-T&T that records each call's inputs and aerial logits."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.calls: list[tuple[torch.Tensor, ...]] = []

    def forward(self, aerial, sentinel, dates, metadata=None, drop_sentinel=False):
        logits = self.network(aerial, sentinel, dates)
        self.calls.append((aerial.clone(), sentinel.clone(), dates.clone(), logits[0].clone()))
        return logits


@pytest.mark.parametrize("mode", ["margin", "blend"])
def test_detection_feeds_each_tile_its_aerial_and_sentinel_windows(zone, tmp_path: Path, mode: str) -> None:
    ortho, acquisitions, data, masks = zone
    config = utt_config(acquisitions, stitching=mode, probabilities=["building"])
    network = tiny_utt(config)
    recorder = Recorder(network)
    summary = detect(config, recorder, [ortho], tmp_path / "map.tif")
    assert summary.maps[0].output.is_file() and (tmp_path / "map_scores.tif").is_file()

    settings = resolve_settings(config, None, None)
    raster = inspect_input(ortho, settings.channels, settings.nodata, settings.all_zero_is_nodata)
    plan = tile_plan(settings, raster)
    normalizer = Normalizer.from_config(config.data.normalization)
    calls = {call[0].numpy().tobytes(): call for call in recorder.calls[1:]}  # the first checks the model
    fill = "zero" if mode == "margin" else "reflect"
    with open_scene(raster, settings.channels) as scene, rasterio.open(tmp_path / "map.tif") as out:
        classes = out.read(1)
        tiles = {(t.row, t.col): t for block in plan.blocks for t in plan.tiles_for(block)}
        assert len(calls) == len(tiles)
        for (row, col), tile in tiles.items():
            aerial = normalizer(
                torch.from_numpy(scene.read_region(Span(row, row + TILE), Span(col, col + TILE), fill))[None]
            )
            call = calls[aerial.numpy().tobytes()]
            series, offsets = expected_sample(data, masks, row, col, config.data.sentinel)
            expected_series = torch.from_numpy(series) / config.data.sentinel.divisor
            torch.testing.assert_close(call[1][0], expected_series, rtol=0, atol=0)
            assert call[2][0].tolist() == offsets.tolist()
            with torch.inference_mode():
                direct = network(aerial, expected_series[None], torch.from_numpy(offsets)[None])[0]
            torch.testing.assert_close(call[3], direct)
            if mode == "margin":
                rows, cols = tile.keep_rows, tile.keep_cols
                kept = direct[0].argmax(0)[rows.start - row : rows.stop - row, cols.start - col : cols.stop - col]
                np.testing.assert_array_equal(classes[rows.start : rows.stop, cols.start : cols.stop], kept.numpy())


def failing_at(config: FlairConfig, at: int) -> nn.Module:
    """The test network (same weights, so resume accepts its blocks) failing on its ``at``-th call."""
    network = tiny_utt(config)
    forward, calls = network.forward, iter(range(1, 1_000_000))

    def fail_at(*args: Any, **kwargs: Any) -> Any:
        if next(calls) == at:
            raise DataError("simulated: the disk holding the series went away")
        return forward(*args, **kwargs)

    network.forward = fail_at
    return network


def test_an_interrupted_map_resumes_to_the_same_bytes(zone, tmp_path: Path) -> None:
    ortho, acquisitions, _, _ = zone
    config = utt_config(acquisitions, confidence=True, cog=True, vectorize=True)
    network = tiny_utt(config)
    reference = detect(config, network, [ortho], tmp_path / "ref.tif", block_size=128)
    assert reference.maps[0].blocks > 2
    target = tmp_path / "map.tif"
    with pytest.raises(DataError, match="finished block"):
        detect(config, failing_at(config, at=12), [ortho], target, block_size=128)
    resumed = detect(config, network, [ortho], target, block_size=128, resume=True)
    assert 0 < resumed.maps[0].blocks_resumed < resumed.maps[0].blocks
    for suffix in (".tif", "_scores.tif", ".qml"):
        assert target.with_name(f"map{suffix}").read_bytes() == (tmp_path / f"ref{suffix}").read_bytes()
    assert (tmp_path / "map.gpkg").is_file()


RANK_SCRIPT = """
import json, os, sys
from pathlib import Path

import torch

sys.path.insert(0, sys.argv[2])
from test_detection_series import tiny_utt, utt_config
from flairkit.detection.run import detect

torch.set_num_threads(1)
args = json.loads(sys.argv[1])
config = utt_config(Path(args["series"]), **args["detect"])
rank = int(os.environ["RANK"])
summary = detect(config, tiny_utt(config), [Path(args["input"])], Path(args["output"]), rank=rank, world_size=2)
print(json.dumps(summary.maps[0].blocks_per_rank))
"""


@pytest.mark.slow
def test_two_ranks_assemble_the_same_map_as_one_process(zone, tmp_path: Path) -> None:
    _, acquisitions, _, _ = zone
    small = np.random.default_rng(2).integers(1, 256, (5, 192, 256), dtype=np.uint8)
    ortho = write_raster(tmp_path / "small.tif", small, from_origin(*ORIGIN, 0.2, 0.2))
    settings = {"stitching": "blend", "confidence": True, "block_size": 128}
    config = utt_config(acquisitions, **settings)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: float sums do not depend on the thread count then
    try:
        detect(config, tiny_utt(config), [ortho], tmp_path / "one.tif")
    finally:
        torch.set_num_threads(threads)
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT, encoding="utf-8")
    args = {"series": str(acquisitions), "input": str(ortho), "output": str(tmp_path / "two.tif"), "detect": settings}
    shares = run_two_ranks(script, args)
    assert shares[0] == shares[1] and min(shares[0]) > 0
    for suffix in (".tif", "_scores.tif"):
        assert (tmp_path / f"two{suffix}").read_bytes() == (tmp_path / f"one{suffix}").read_bytes()
