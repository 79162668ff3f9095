"""Zone detection with a FLAIR-HUB multimodal network: every modality read per tile at its own resolution (aerial,
elevation from a DSM and a DTM, a Sentinel-2 series with per-tile cloud filtering), fed to the network through the
detection pipeline (margin and blend), a missing modality refused, one map per task."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import typer
from rasterio.enums import Resampling
from rasterio.transform import Affine, from_origin
from rasterio.warp import reproject
from typer.testing import CliRunner

from conftest import TINY_HUB_NETWORK
from flairkit.cli.detect import detect_command
from flairkit.config import load_config
from flairkit.config.schema import FlairConfig
from flairkit.data.hub.elevation import elevation_channels
from flairkit.data.hub.sentinel import clear_dates, date_offsets
from flairkit.data.hub.tiles import HubTileReader
from flairkit.detection.run import detect
from flairkit.detection.settings import resolve_settings
from flairkit.errors import ConfigError, DataError
from flairkit.models.hub import HubNetwork, normalization, normalize_batch
from ranks import run_two_ranks

CRS = "EPSG:2154"
ORIGIN = (843_000.0, 6_519_000.0)
SIZE = 1024
"""Aerial pixels across the zone (204.8 m)."""
TILE, MARGIN = 512, 128
"""Tiles start every 256 px (51.2 m): whole Sentinel-2 pixels of 10.24 m."""
DATES = [dt.date(2021, 3, 20), dt.date(2021, 5, 4), dt.date(2021, 7, 9)]
CLOUDY = 1
"""Index of the date whose west half is under clouds."""
MODALITIES = "data.hub.modalities=[AERIAL_RGBI,DEM_ELEV,SENTINEL2_TS]"


def _write(path: Path, data: np.ndarray, transform: Affine) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
        dtype=data.dtype, crs=CRS, transform=transform,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def products(tmp_path_factory) -> dict[str, Path]:
    return write_products(tmp_path_factory.mktemp("hubdetect"))


def write_products(root: Path) -> dict[str, Path]:
    """An RGBI orthophoto, a DSM at 0.2 m and a DTM at 0.5 m, and a Sentinel-2 series at 10 m (its grid offset by
    3 m from the aerial one, so that it is warped) with one date cloudy over the west half."""
    rng = np.random.default_rng(0)
    x0, y0 = ORIGIN
    out = {
        "ortho": _write(
            root / "ortho.tif", rng.integers(0, 256, (4, SIZE, SIZE), np.uint8), from_origin(x0, y0, 0.2, 0.2)
        )
    }
    out["dsm"] = _write(
        root / "dsm.tif", rng.uniform(100, 130, (1, SIZE, SIZE)).astype(np.float32), from_origin(x0, y0, 0.2, 0.2)
    )
    out["dtm"] = _write(
        root / "dtm.tif", rng.uniform(95, 105, (1, 420, 420)).astype(np.float32), from_origin(x0 - 1, y0 + 1, 0.5, 0.5)
    )
    side, s2_transform = 30, from_origin(x0 - 47, y0 + 47, 10, 10)
    entries = []
    for number, date in enumerate(DATES):
        data = rng.integers(0, 3000, (10, side, side)).astype(np.uint16)
        masks = np.zeros((2, side, side), np.uint8)
        if number == CLOUDY:
            masks[1, :, : side // 2] = 90
        _write(root / f"s2_{number}.tif", data, s2_transform)
        _write(root / f"s2_{number}_mask.tif", masks, s2_transform)
        entries.append({"date": date.isoformat(), "path": f"s2_{number}.tif", "mask": f"s2_{number}_mask.tif"})
    out["s2"] = root / "acquisitions.json"
    out["s2"].write_text(json.dumps({"acquisitions": entries}))
    return out


def hub_config(products: dict[str, Path], *extra: str) -> FlairConfig:
    return load_config(
        "flairhub-LC-D",
        [
            *TINY_HUB_NETWORK,
            MODALITIES,
            f"detect.tile_size={TILE}",
            f"detect.margin={MARGIN}",
            "detect.batch_size=1",
            "detect.device=cpu",
            f"detect.sentinel2={products['s2']}",
            f"detect.inputs={{dsm: {products['dsm']}, dtm: {products['dtm']}}}",
            *extra,
        ],
    )


def _warped(path: Path, bands: int, transform: Affine, side: int, resampling: Resampling) -> np.ndarray:
    """rasterio's own reprojection of ``path`` onto a ``side`` px window with ``transform``, in the file's type."""
    with rasterio.open(path) as src:
        out = np.zeros((bands, side, side), src.dtypes[0])
        reproject(
            src.read(), out, src_transform=src.transform, src_crs=src.crs,
            dst_transform=transform, dst_crs=CRS, resampling=resampling,
        )  # fmt: skip
    return out.astype(np.float32)


def direct_item(products: dict[str, Path], row: int, col: int, fill: str = "constant") -> dict[str, Any]:
    """The tile's modalities computed directly: each source reprojected onto the tile's own extent; the aerial
    image outside the map as the stitching mode fills it (margin: zeros, blend: mirrored)."""
    x, y = from_origin(*ORIGIN, 0.2, 0.2) @ (col, row)
    with rasterio.open(products["ortho"]) as src:
        whole = np.pad(src.read([4, 1, 2]), ((0, 0), (TILE, TILE), (TILE, TILE)), mode=fill)
    aerial = whole[:, row + TILE : row + 2 * TILE, col + TILE : col + 2 * TILE]
    dsm = _warped(products["dsm"], 1, from_origin(x, y, 0.2, 0.2), TILE, Resampling.bilinear)
    dtm = _warped(products["dtm"], 1, from_origin(x, y, 0.2, 0.2), TILE, Resampling.bilinear)
    # 10 px of 10.24 m (IGN's Sentinel patch of a 512 px tile), on the 10.24 m grid from the map's corner, whose
    # pixel 5 holds the tile's centre: the tile's own extent when it starts on that grid (every 256 px)
    top, left = (math.floor((v + TILE / 2) * 0.2 / 10.24) - 5 for v in (row, col))
    s2_grid = from_origin(ORIGIN[0] + left * 10.24, ORIGIN[1] - top * 10.24, 10.24, 10.24)
    folder = products["s2"].parent
    series = np.stack([_warped(folder / f"s2_{n}.tif", 10, s2_grid, 10, Resampling.bilinear) for n in range(3)])
    masks = np.stack([_warped(folder / f"s2_{n}_mask.tif", 2, s2_grid, 10, Resampling.nearest) for n in range(3)])
    keep = clear_dates(masks.astype(np.uint8), 1, 1, 0.05)
    return {
        "AERIAL_RGBI": torch.from_numpy(aerial),
        "DEM_ELEV": torch.from_numpy(elevation_channels(np.concatenate([dsm, dtm]), "dsm_ndsm", "test")),
        "SENTINEL2_TS": torch.from_numpy(series[keep]),
        "SENTINEL2_DATES": torch.from_numpy(date_offsets([DATES[i] for i in keep])),
    }


def test_every_tile_reads_each_modality_as_rasterios_reprojection_of_its_extent_with_its_own_dates(products):
    config = hub_config(products)
    settings = resolve_settings(config, None, None)
    assert settings.hub is not None and settings.channels == (4, 1, 2)
    transform = from_origin(*ORIGIN, 0.2, 0.2)
    seen = set()
    with HubTileReader(settings.hub, rasterio.crs.CRS.from_string(CRS), transform, SIZE, SIZE, TILE) as reader:
        # west tile, east tile, west again: a tile's dates never depend on the tiles read before it
        for row, col in [(0, 0), (256, 512), (0, 0), (512, 256)]:
            item = reader.tile_input(row, col, TILE)
            expected = direct_item(products, row, col)
            torch.testing.assert_close(item["DEM_ELEV"], expected["DEM_ELEV"], rtol=0, atol=1e-5)
            assert torch.equal(item["SENTINEL2_DATES"], expected["SENTINEL2_DATES"])
            assert item["SENTINEL2_TS"].shape == (len(expected["SENTINEL2_DATES"]), 10, 10, 10)
            assert torch.equal(item["SENTINEL2_TS"], expected["SENTINEL2_TS"])
            seen.add(len(expected["SENTINEL2_DATES"]))
    assert seen == {len(DATES) - 1, len(DATES)}  # the cloudy date is dropped in the west only


class Recording(HubNetwork):
    """The network, keeping each call's tile ids, aerial tiles and logits."""

    calls: list[tuple[list[str], torch.Tensor, dict[str, torch.Tensor]]]

    def forward(self, batch, output_size=None, with_aux=None, drop=()):  # type: ignore[override]
        out = super().forward(batch, output_size, with_aux, drop)
        self.calls.append(
            (list(batch["patch_id"]), batch["AERIAL_RGBI"].clone(), {k: v.clone() for k, v in out.items()})
        )
        return out


@pytest.mark.parametrize("stitching", ["margin", "blend"])
def test_each_tile_logits_equal_a_direct_network_call_on_its_directly_read_modalities(products, tmp_path, stitching):
    config = hub_config(products, f"detect.stitching={stitching}")
    torch.manual_seed(0)
    network = Recording(load_hub_spec(config)).eval()
    network.calls = []
    summary = detect(config, network, [products["ortho"]], tmp_path / "map.tif")
    assert (tmp_path / "map.tif").is_file() and summary.maps[0].tiles_per_rank[0] == len(network.calls) - 1
    statistics = normalization(config)
    checked = set()
    for ids, aerial, out in network.calls[1:]:  # the first call is the blank check tile
        row, col = (int(v) for v in ids[0].removeprefix("tile ").split(","))
        fill = "constant" if stitching == "margin" else "reflect"
        item = {k: v[None] for k, v in direct_item(products, row, col, fill).items()}
        item["SENTINEL2_PAD_MASK"] = torch.zeros(item["SENTINEL2_DATES"].shape, dtype=torch.bool)
        direct = normalize_batch(item, statistics)
        assert torch.equal(aerial, direct["AERIAL_RGBI"]), (row, col)
        with torch.no_grad():
            expected = HubNetwork.forward(network, direct, (TILE, TILE))
        torch.testing.assert_close(out["AERIAL_LABEL-COSIA"], expected["AERIAL_LABEL-COSIA"], rtol=1e-4, atol=1e-4)
        checked.add((row, col))
    # tiles off the 10.24 m grid too (they start 128 px before the map): their series window is the nearest one
    assert len(checked) >= 4 and any(row % 256 for row, _ in checked)
    with rasterio.open(tmp_path / "map.tif") as src:
        assert (src.width, src.height) == (SIZE, SIZE) and src.transform.almost_equals(from_origin(*ORIGIN, 0.2, 0.2))


def test_tile_inputs_are_read_one_tile_ahead_of_the_network_not_a_block_ahead(products, tmp_path, monkeypatch):
    """A FLAIR-HUB tile's elevation alone is 19 MB at 1536 px: holding a whole block's (and the next block's) made
    memory grow with the raster; the reader now keeps one tile ahead."""
    events: list[str] = []
    read = HubTileReader.tile_input

    def recorded(self, row, col, size):
        events.append("read")
        return read(self, row, col, size)

    monkeypatch.setattr(HubTileReader, "tile_input", recorded)
    config = hub_config(products, "detect.block_size=512")  # several blocks of several tiles
    torch.manual_seed(0)
    network = Recording(load_hub_spec(config)).eval()
    network.calls = []
    forward = network.forward

    def counted(*args, **kwargs):
        events.append("run")
        return forward(*args, **kwargs)

    network.forward = counted
    detect(config, network, [products["ortho"]], tmp_path / "map.tif")
    runs = [i for i, event in enumerate(events) if event == "run"][1:]  # after the blank check tile
    assert len(runs) > 9
    for number, position in enumerate(runs):
        reads = events[:position].count("read")
        # its own input is read before it runs, and at most the next tile's besides (not a block's)
        assert number + 1 <= reads <= number + 2, (number, reads)


def load_hub_spec(config: FlairConfig):
    from flairkit.models.hub import hub_spec

    return hub_spec(config)


def test_a_modality_the_model_reads_but_not_given_is_refused_naming_its_input(products, tmp_path):
    config = hub_config(products, "detect.inputs={dsm: " + str(products["dsm"]) + "}")
    config = config.model_copy(update={"detect": config.detect.model_copy(update={"inputs": {}})})
    with pytest.raises(ConfigError, match=r"DEM_ELEV .* --input dsm=FILE"):
        resolve_settings(config, None, None)
    no_s2 = hub_config(products)
    no_s2 = no_s2.model_copy(update={"detect": no_s2.detect.model_copy(update={"sentinel2": None})})
    with pytest.raises(ConfigError, match=r"SENTINEL2_TS .* --input s2=FILE"):
        resolve_settings(no_s2, None, None)
    with pytest.raises(ConfigError, match=r"detect.inputs.spot .* reads no SPOT_RGBI"):
        resolve_settings(hub_config(products, f"detect.inputs.spot={products['dsm']}"), None, None)
    with pytest.raises(ConfigError, match=r"detect.tile_size=384 .* multiple of 256"):
        resolve_settings(hub_config(products, "detect.tile_size=384"), None, None)


def test_a_multi_task_model_writes_one_map_per_task_from_a_training_checkpoint(products, tmp_path):
    overrides = [*TINY_HUB_NETWORK, MODALITIES, "data.hub.labels=[AERIAL_LABEL-COSIA,ALL_LABEL-LPIS]"]
    config = load_config("flairhub-LC-D", overrides)
    torch.manual_seed(0)
    network = HubNetwork(load_hub_spec(config))
    checkpoint = tmp_path / "hub.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in network.state_dict().items()},
            "hyper_parameters": {"config": config.model_dump(mode="json")},
            "epoch": 0,
            "global_step": 1,
        },
        checkpoint,
    )
    app = typer.Typer()
    app.command()(detect_command)
    args = [str(products["ortho"]), "-o", str(tmp_path / "maps"), "-c", "flairhub-LC-D", "-w", str(checkpoint)]
    args += [f"--input=s2={products['s2']}", f"--input=dsm={products['dsm']}", f"--input=dtm={products['dtm']}"]
    for override in [*overrides, f"detect.tile_size={TILE}", f"detect.margin={MARGIN}"]:
        args += ["--set", override]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    for task, classes in (("AERIAL_LABEL-COSIA", 19), ("ALL_LABEL-LPIS", 23)):
        with rasterio.open(tmp_path / "maps" / f"ortho_{task}.tif") as src:
            values = np.unique(src.read(1))
        assert values.size and values.max() <= classes, task
    assert not (tmp_path / "maps" / "ortho_landcover.tif").exists()
    written = {path: path.stat().st_mtime_ns for path in (tmp_path / "maps").glob("ortho_*.tif")}
    again = CliRunner().invoke(app, [*args, "--device", "cpu", "--no-progress", "--resume"])
    assert again.exit_code == 0, again.output
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "maps").glob("ortho_*.tif")} == written


def test_spot_and_sentinel1_windows_are_rasterios_reprojection_and_a_masked_sentinel1_list_is_refused(tmp_path):
    # sources covering each modality's whole grid: GDAL's downsampling kernel then does not depend on the grid's
    # extent (uint16 rounding aside)
    rng = np.random.default_rng(1)
    x0, y0 = ORIGIN
    spot = _write(
        tmp_path / "spot.tif",
        rng.integers(0, 4000, (4, 260, 260)).astype(np.uint16),
        from_origin(x0 - 90, y0 + 90, 1.5, 1.5),
    )
    s1_dates = [dt.date(2021, 4, 2), dt.date(2021, 6, 20)]
    entries = []
    for number, date in enumerate(s1_dates):
        data = rng.normal(-12, 3, (2, 40, 40)).astype(np.float32)
        _write(tmp_path / f"s1_{number}.tif", data, from_origin(x0 - 97, y0 + 97, 10, 10))
        entries.append({"date": date.isoformat(), "path": f"s1_{number}.tif"})
    (tmp_path / "s1.json").write_text(json.dumps(entries))
    overrides = [
        *TINY_HUB_NETWORK,
        "data.hub.modalities=[AERIAL_RGBI,SPOT_RGBI,SENTINEL1-ASC_TS]",
        f"detect.tile_size={TILE}",
    ]
    inputs = f"detect.inputs={{spot: {spot}, s1asc: {tmp_path / 's1.json'}}}"
    settings = resolve_settings(load_config("flairhub-LC-D", [*overrides, inputs]), None, None)
    transform = from_origin(x0, y0, 0.2, 0.2)
    with HubTileReader(settings.hub, rasterio.crs.CRS.from_string(CRS), transform, SIZE, SIZE, TILE) as reader:
        for row, col in [(0, 0), (512, 256)]:
            item = reader.tile_input(row, col, TILE)
            x, y = transform @ (col, row)
            spot_expected = _warped(spot, 4, from_origin(x, y, 1.6, 1.6), 64, Resampling.bilinear)
            torch.testing.assert_close(item["SPOT_RGBI"], torch.from_numpy(spot_expected), rtol=0, atol=1.0)
            grid = from_origin(x, y, 10.24, 10.24)
            s1 = np.stack([_warped(tmp_path / f"s1_{n}.tif", 2, grid, 10, Resampling.bilinear) for n in range(2)])
            torch.testing.assert_close(item["SENTINEL1-ASC_TS"], torch.from_numpy(s1), rtol=0, atol=1e-5)
            assert torch.equal(item["SENTINEL1-ASC_DATES"], torch.from_numpy(date_offsets(s1_dates)))
    entries[0]["mask"] = "s1_1.tif"
    (tmp_path / "s1.json").write_text(json.dumps(entries))
    with pytest.raises(DataError, match=r"s1\.json: .*s1_1\.tif is a mask but Sentinel-1 dates have none"):
        resolve_settings(load_config("flairhub-LC-D", [*overrides, inputs]), None, None)


RANK_SCRIPT = """
import json, os, sys
from pathlib import Path

import torch

sys.path.insert(0, sys.argv[2])
from test_detection_hub import hub_config, load_hub_spec
from flairkit.detection.run import detect
from flairkit.models.hub import HubNetwork

torch.set_num_threads(1)
args = json.loads(sys.argv[1])
config = hub_config({k: Path(v) for k, v in args["products"].items()}, *args["overrides"])
torch.manual_seed(0)
network = HubNetwork(load_hub_spec(config))
rank = int(os.environ["RANK"])
summary = detect(config, network, [Path(args["input"])], Path(args["output"]), rank=rank, world_size=2)
print(json.dumps(summary.maps[0].blocks_per_rank))
"""


@pytest.mark.slow
def test_two_ranks_write_the_same_map_as_one_process(products, tmp_path):
    overrides = ["detect.stitching=blend", "detect.block_size=512", "detect.confidence=true"]
    config = hub_config(products, *overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: float sums do not depend on the thread count then
    try:
        torch.manual_seed(0)
        detect(config, HubNetwork(load_hub_spec(config)), [products["ortho"]], tmp_path / "one.tif")
    finally:
        torch.set_num_threads(threads)
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT, encoding="utf-8")
    args = {
        "products": {k: str(v) for k, v in products.items()},
        "overrides": overrides,
        "input": str(products["ortho"]),
        "output": str(tmp_path / "two.tif"),
    }
    shares = run_two_ranks(script, args)
    assert shares[0] == shares[1] and min(shares[0]) > 0
    for suffix in (".tif", "_scores.tif"):
        assert (tmp_path / f"two{suffix}").read_bytes() == (tmp_path / f"one{suffix}").read_bytes()
