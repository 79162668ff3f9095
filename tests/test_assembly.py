"""Model inputs assembled from several rasters (RVB + IRC + DSM + DTM), warped onto the model's grid, and the input
contract checked before any work."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import typer
import yaml
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import from_origin
from rasterio.warp import reproject, transform_bounds
from typer.testing import CliRunner

from flairkit.cli.data import data_app
from flairkit.cli.detect import detect_command
from flairkit.config import load_config
from flairkit.data.assembly import AssembledScene, flair1_elevation, inspect_assembly
from flairkit.data.scenes import Span, inspect_input
from flairkit.detection.jobs import work_manifest
from flairkit.detection.resume import WorkDir
from flairkit.detection.settings import resolve_settings
from flairkit.errors import ConfigError, DataError
from flairkit.models.factory import build_aerial_model

WEST, NORTH = 843_000.0, 6_519_000.0
HEIGHT, WIDTH = 48, 40
RGBIE = [1, 2, 3, 4, 5]


def write(path: Path, data: np.ndarray, res: float = 0.2, crs: str = "EPSG:2154", **tags) -> Path:
    west, north = tags.pop("origin", (WEST, NORTH))
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0]}
    profile.update(dtype=data.dtype.name, crs=crs, transform=from_origin(west, north, res, res))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if "units" in tags:
            dst.units = tags["units"]
        if "colorinterp" in tags:
            dst.colorinterp = tags["colorinterp"]
    return path


def products(folder: Path, rng_seed: int = 0) -> dict[str, np.ndarray]:
    """RVB, IRC (NIR, R, G), DSM and DTM (metres) of one area at 0.2 m, written as separate files."""
    rng = np.random.default_rng(rng_seed)
    data = {
        "rvb": rng.integers(1, 256, (3, HEIGHT, WIDTH), dtype=np.uint8),
        "irc": rng.integers(1, 256, (3, HEIGHT, WIDTH), dtype=np.uint8),
        "dtm": rng.uniform(100, 110, (1, HEIGHT, WIDTH)).astype(np.float32),
    }
    data["dsm"] = data["dtm"] + rng.uniform(0, 40, (1, HEIGHT, WIDTH)).astype(np.float32)
    for name, array in data.items():
        write(folder / f"{name}.tif", array)
    return data


def sources(folder: Path) -> dict[str, str]:
    return {
        "rgb": str(folder / "rvb.tif"),
        "nir": f"{folder / 'irc.tif'}:1",
        "dsm": str(folder / "dsm.tif"),
        "dtm": str(folder / "dtm.tif"),
    }


def read_all(raster, channels) -> np.ndarray:
    with AssembledScene(raster, channels) as scene:
        return scene.read_region(Span(0, raster.height), Span(0, raster.width), "zero")


def test_rvb_irc_dsm_dtm_assembled_equal_the_stack_made_by_hand(tmp_path):
    data = products(tmp_path)
    raster = inspect_assembly(sources(tmp_path), RGBIE)
    assert (raster.width, raster.height) == (WIDTH, HEIGHT)
    elevation = flair1_elevation(data["dsm"][0], data["dtm"][0])
    by_hand = np.concatenate([data["rvb"], data["irc"][:1], elevation[None]])
    np.testing.assert_array_equal(read_all(raster, RGBIE), by_hand)
    np.testing.assert_array_equal(read_all(raster, [1, 2, 3, 4]), by_hand[:4])


def test_a_source_in_another_crs_and_resolution_is_warped_like_rasterio_reproject(tmp_path):
    products(tmp_path)
    left, bottom, right, top = transform_bounds("EPSG:2154", "EPSG:32631", WEST, NORTH - HEIGHT * 0.2, WEST + 8, NORTH)
    west, north, res = left - 5, top + 5, 0.5
    rows, cols = int((top - bottom + 10) / res), int((right - left + 10) / res)
    y, x = np.mgrid[0:rows, 0:cols]
    nir = (40 + 3 * x + 2 * y).clip(0, 255).astype(np.uint8)[None]
    write(tmp_path / "irc_utm.tif", nir, res=res, crs="EPSG:32631", origin=(west, north))
    inputs = {"rgb": str(tmp_path / "rvb.tif"), "nir": str(tmp_path / "irc_utm.tif")}
    raster = inspect_assembly(inputs, [1, 2, 3, 4], allow_resample=True)
    expected = np.zeros((raster.height, raster.width), dtype=np.float32)
    reproject(
        nir[0].astype(np.float32),
        expected,
        src_transform=from_origin(west, north, res, res),
        src_crs="EPSG:32631",
        dst_transform=raster.transform,
        dst_crs=raster.crs,
        resampling=Resampling.bilinear,
    )
    assembled = read_all(raster, [4])[0].astype(np.float32)
    assert np.abs(assembled - expected).max() <= 1
    assert assembled.std() > 5  # a gradient, not a constant that would match anything


def test_flair1_elevation_is_the_height_above_ground_in_20_cm_units_clipped_to_a_byte():
    dtm = np.full(6, 100.0, dtype=np.float32)
    dsm = dtm + np.array([0.0, 0.2, 1.0, 51.0, 60.0, -3.0], dtype=np.float32)
    assert flair1_elevation(dsm, dtm).tolist() == [0, 1, 5, 255, 255, 0]
    assert flair1_elevation(dsm, dtm).dtype == np.uint8


def test_a_grid_at_the_models_resolution_from_a_coarser_source_when_allowed(tmp_path):
    products(tmp_path)
    coarse = np.random.default_rng(1).integers(1, 256, (3, 20, 16), dtype=np.uint8)
    inputs = {"rgb": str(write(tmp_path / "rvb_50cm.tif", coarse, res=0.5))}
    with pytest.raises(DataError, match=r"rvb_50cm.tif: pixels are 0.5 x 0.5 .*--allow-resample"):
        inspect_assembly(inputs, [1, 2, 3])
    raster = inspect_assembly(inputs, [1, 2, 3], allow_resample=True)
    assert (raster.width, raster.height, raster.transform.a) == (40, 50, 0.2)
    raster = inspect_assembly(inputs, [1, 2, 3], resolution=0.5)
    assert (raster.width, raster.height) == (16, 20)


def test_every_bad_input_is_a_one_line_error_with_the_fix(tmp_path):
    data = products(tmp_path)
    given = sources(tmp_path)
    with pytest.raises(
        DataError, match=r"has 3 band\(s\) but data.channels=\[1, 2, 3, 4, 5\] needs band\(s\) \[4, 5\]"
    ):
        inspect_input(tmp_path / "rvb.tif", RGBIE)
    with pytest.raises(ConfigError, match="no nir, dsm, dtm is given; add --input nir=FILE"):
        inspect_assembly({"rgb": given["rgb"]}, RGBIE)
    with pytest.raises(ConfigError, match="does not read dsm, dtm"):
        inspect_assembly(given, [1, 2, 3, 4])
    with pytest.raises(ConfigError, match="unknown kind"):
        inspect_assembly({**given, "lidar": given["dsm"]}, RGBIE)
    with pytest.raises(DataError, match=r"tile irc.tif has 3 uint8 band\(s\) but dsm.tif has 1 float32"):
        inspect_assembly({**given, "dsm": str(tmp_path)}, RGBIE)
    with pytest.raises(ConfigError, match="selects 2 band"):
        inspect_assembly({**given, "rgb": given["rgb"] + ":1,2"}, RGBIE)
    feet = write(tmp_path / "dsm_ft.tif", data["dsm"], units=("ft",))
    with pytest.raises(DataError, match=r"dsm_ft.tif: elevation is in ft .*0.3048"):
        inspect_assembly({**given, "dsm": str(feet)}, RGBIE)
    undeclared = write(tmp_path / "dsm_high.tif", data["dsm"] * 100)
    with pytest.raises(DataError, match=r"dsm_high.tif: values reach .* feet"):
        inspect_assembly({**given, "dsm": str(undeclared)}, RGBIE)
    mixed = write(tmp_path / "dsm_mixed.tif", data["dsm"] * 3.2808)
    with pytest.raises(DataError, match=r"median height of the DSM above the DTM is .* feet"):
        inspect_assembly({**given, "dsm": str(mixed)}, RGBIE)
    bgr = (ColorInterp.blue, ColorInterp.green, ColorInterp.red)
    swapped = write(tmp_path / "bgr.tif", data["rvb"][::-1].copy(), colorinterp=bgr)
    with pytest.raises(DataError, match=r"bgr.tif: its bands are blue, green, red .* rgb=.*bgr.tif:3,2,1"):
        inspect_assembly({**given, "rgb": str(swapped)}, RGBIE)
    raster = inspect_assembly({**given, "rgb": f"{swapped}:3,2,1"}, RGBIE)
    np.testing.assert_array_equal(read_all(raster, [1, 2, 3]), data["rvb"])


def dsm_mosaic_with_a_gap(folder: Path, dsm: np.ndarray, gap: slice) -> Path:
    """A VRT of two DSM tiles (no nodata declared) with the columns ``gap`` between them."""
    tiles = (("left.tif", 0, gap.start), ("right.tif", gap.stop, WIDTH))
    lines = [f'<VRTDataset rasterXSize="{WIDTH}" rasterYSize="{HEIGHT}"><SRS>EPSG:2154</SRS>']
    lines.append(f"<GeoTransform>{WEST!r}, 0.2, 0.0, {NORTH!r}, 0.0, -0.2</GeoTransform>")
    lines.append('<VRTRasterBand dataType="Float32" band="1">')
    for name, start, stop in tiles:
        write(folder / name, dsm[:, :, start:stop].copy(), origin=(WEST + 0.2 * start, NORTH))
        size = f'xSize="{stop - start}" ySize="{HEIGHT}"'
        lines.append(
            f'<SimpleSource><SourceFilename relativeToVRT="1">{name}</SourceFilename><SourceBand>1</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" {size}/><DstRect xOff="{start}" yOff="0" {size}/></SimpleSource>'
        )
    (folder / "dsm.vrt").write_text("\n".join([*lines, "</VRTRasterBand></VRTDataset>"]))
    return folder / "dsm.vrt"


def test_gaps_of_a_vrt_mosaic_source_are_nodata(tmp_path):
    data = products(tmp_path)
    mosaic = dsm_mosaic_with_a_gap(tmp_path, data["dsm"], slice(16, 24))
    raster = inspect_assembly({**sources(tmp_path), "dsm": str(mosaic)}, RGBIE)
    rows, cols = Span(0, HEIGHT), Span(0, WIDTH)
    with AssembledScene(raster, RGBIE) as scene:
        valid = scene.valid(rows, cols, scene.read_region(rows, cols, "zero"))
    assert not valid[:, 16:24].any()
    assert valid[:, :16].all() and valid[:, 24:].all()
    assert raster.sources[:2] == (tmp_path / "rvb.tif", tmp_path / "irc.tif")
    assert tmp_path / "left.tif" in raster.sources  # an output that is a tile of the mosaic is refused


def test_a_source_on_the_grid_is_read_directly_as_the_warped_vrt_would_give_it(tmp_path):
    products(tmp_path)
    # A NIR source on the grid starting 5 rows above it and ending 8 columns short of its right edge.
    nir = np.random.default_rng(3).integers(1, 256, (1, HEIGHT, WIDTH - 8), dtype=np.uint8)
    write(tmp_path / "nir_short.tif", nir, origin=(WEST, NORTH + 5 * 0.2))
    expected = np.zeros((HEIGHT, WIDTH), dtype=bool)
    expected[: HEIGHT - 5, : WIDTH - 8] = True
    rows, cols = Span(0, HEIGHT), Span(0, WIDTH)
    raster = inspect_assembly({**sources(tmp_path), "nir": str(tmp_path / "nir_short.tif")}, RGBIE)
    with AssembledScene(raster, RGBIE) as scene:
        assert {type(reader).__name__ for reader in scene._warped.values()} == {"_OnGrid"}
        bands = scene.read_region(rows, cols, "zero")
        np.testing.assert_array_equal(scene.valid(rows, cols, bands), expected)
    np.testing.assert_array_equal(bands[3][expected], nir[0, 5:].ravel())
    assert (bands[3][~expected] == 0).all()
    # Half a pixel off the grid, the source is warped: the same pixels are missing.
    write(tmp_path / "nir_shift.tif", nir, origin=(WEST + 0.1, NORTH + 5 * 0.2))
    warped = inspect_assembly({**sources(tmp_path), "nir": str(tmp_path / "nir_shift.tif")}, RGBIE)
    with AssembledScene(warped, RGBIE) as scene:
        assert type(scene._warped["nir"]).__name__ == "WarpedVRT"
        valid = scene.valid(rows, cols, scene.read_region(rows, cols, "zero"))
    np.testing.assert_array_equal(valid[:, 1 : WIDTH - 8], expected[:, 1 : WIDTH - 8])


def test_a_folder_of_tiles_of_one_product_is_mosaicked_in_memory_with_its_gaps_as_nodata(tmp_path):
    data = products(tmp_path)
    tiles = tmp_path / "rvb_tiles"
    tiles.mkdir()
    # Three tiles of the RVB product; rows 24..31 of the right half have none.
    for name, rows, cols in (("a.tif", (0, 24), (0, 40)), ("b.tif", (24, 48), (0, 20)), ("c.tif", (32, 48), (20, 40))):
        part = data["rvb"][:, rows[0] : rows[1], cols[0] : cols[1]].copy()
        write(tiles / name, part, origin=(WEST + 0.2 * cols[0], NORTH - 0.2 * rows[0]))
    # Zeros are pixels here: only the mosaic's coverage can tell the gap.
    raster = inspect_assembly({**sources(tmp_path), "rgb": str(tiles)}, RGBIE, all_zero_is_nodata=False)
    assert (raster.width, raster.height, raster.transform) == (WIDTH, HEIGHT, from_origin(WEST, NORTH, 0.2, 0.2))
    assert not any(path.suffix == ".vrt" for path in tmp_path.rglob("*"))  # no file written
    assert tiles / "c.tif" in raster.sources  # a tile is an input: no output may overwrite it
    rows, cols = Span(0, HEIGHT), Span(0, WIDTH)
    with AssembledScene(raster, RGBIE) as scene:
        bands = scene.read_region(rows, cols, "zero")
        valid = scene.valid(rows, cols, bands)
    gap = np.zeros((HEIGHT, WIDTH), dtype=bool)
    gap[24:32, 20:] = True
    np.testing.assert_array_equal(valid, ~gap)
    np.testing.assert_array_equal(bands[:3][:, ~gap], data["rvb"][:, ~gap])

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"rgb=.*empty: folder holds no raster"):
        inspect_assembly({**sources(tmp_path), "rgb": str(tmp_path / "empty")}, RGBIE)
    write(tiles / "d.tif", data["rvb"][:2, :8, :8].copy(), origin=(WEST + 40, NORTH))
    with pytest.raises(DataError, match=r"rgb=.*rvb_tiles: tile d.tif has 2 uint8 band\(s\) but a.tif has 3 uint8"):
        inspect_assembly({**sources(tmp_path), "rgb": str(tiles)}, RGBIE)
    write(tiles / "d.tif", data["rvb"][:, :8, :8].copy(), crs="EPSG:32631", origin=(500_000.0, 5_000_000.0))
    with pytest.raises(DataError, match=r"tile d.tif is in EPSG:32631 but a.tif in EPSG:2154; .* one folder per CRS"):
        inspect_assembly({**sources(tmp_path), "rgb": str(tiles)}, RGBIE)


CONFIG = {
    "data": {"channels": RGBIE, "nomenclature": "15cl"},
    "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
    "detect": {"tile_size": 64, "margin": 16, "batch_size": 4},
}


def test_flair_detect_with_inputs_writes_the_map_of_the_stacked_orthophoto(tmp_path):
    data = products(tmp_path)
    stack = np.concatenate([data["rvb"], data["irc"][:1], flair1_elevation(data["dsm"][0], data["dtm"][0])[None]])
    write(tmp_path / "rgbie.tif", stack)
    config_path = tmp_path / "detect.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    torch.manual_seed(0)
    torch.save(build_aerial_model(load_config(config_path), pretrained_encoder=False).state_dict(), tmp_path / "w.pth")
    app = typer.Typer()
    app.command()(detect_command)
    common = ["-c", str(config_path), "--checkpoint", str(tmp_path / "w.pth"), "--device", "cpu", "--no-progress"]
    stacked = CliRunner().invoke(app, [str(tmp_path / "rgbie.tif"), "-o", str(tmp_path / "stacked.tif"), *common])
    assert stacked.exit_code == 0, stacked.output
    given = [f"--input={kind}={path}" for kind, path in sources(tmp_path).items()]
    assembled = CliRunner().invoke(app, [*given, "-o", str(tmp_path / "assembled.tif"), *common])
    assert assembled.exit_code == 0, assembled.output
    with rasterio.open(tmp_path / "stacked.tif") as a, rasterio.open(tmp_path / "assembled.tif") as b:
        assert a.transform == b.transform and a.crs == b.crs
        np.testing.assert_array_equal(a.read(), b.read())
    both = CliRunner().invoke(app, [str(tmp_path / "rgbie.tif"), *given, "-o", str(tmp_path / "x.tif"), *common])
    assert both.exit_code == 2 and "not both" in both.output
    bad = CliRunner().invoke(app, ["--input", "rvb.tif", "-o", str(tmp_path / "x.tif"), *common])
    assert bad.exit_code == 2 and "KIND=FILE" in bad.output
    coarse = write(tmp_path / "rvb_50cm.tif", data["rvb"][:, :20, :16].copy(), res=0.5)
    given[0] = f"--input=rgb={coarse}"
    refused = CliRunner().invoke(app, [*given, "-o", str(tmp_path / "coarse.tif"), *common])
    assert refused.exit_code == 2 and "--allow-resample" in refused.output
    warped = CliRunner().invoke(app, [*given, "--allow-resample", "-o", str(tmp_path / "coarse.tif"), *common])
    assert warped.exit_code == 0, warped.output
    with rasterio.open(tmp_path / "coarse.tif") as src:
        assert (src.width, src.height, src.res) == (40, 50, (0.2, 0.2))


def test_synthetic_products_assemble_into_the_stacked_orthophoto(tmp_path):
    out = tmp_path / "world"
    options = ["--domains", "3", "--areas", "1", "--patches", "1", "--patch-size", "16", "--no-sentinel"]
    result = CliRunner().invoke(data_app, ["synth", str(out), *options, "--ortho-size", "300", "--products"])
    assert result.exit_code == 0, result.output
    folder = out / "orthophotos"
    given = {
        "rgb": str(folder / "ORTHO_0_RVB.tif"),
        "nir": f"{folder / 'ORTHO_0_IRC.tif'}:1",
        "dsm": str(folder / "ORTHO_0_DSM.tif"),
        "dtm": str(folder / "ORTHO_0_DTM.tif"),
    }
    with rasterio.open(folder / "ORTHO_0.tif") as src:
        stacked, transform = src.read(), src.transform
    with rasterio.open(given["dtm"]) as dtm, rasterio.open(folder / "ORTHO_0_IRC.tif") as irc:
        assert dtm.res == (1.0, 1.0) and dtm.dtypes == ("float32",)
        np.testing.assert_array_equal(irc.read(), stacked[[3, 0, 1]])
    assert len(np.unique(stacked[4])) > 3
    raster = inspect_assembly(given, RGBIE)
    assert raster.transform == transform and (raster.width, raster.height) == (300, 300)
    np.testing.assert_array_equal(read_all(raster, RGBIE), stacked)


def test_synthetic_products_in_another_crs_and_resolution_are_rasterios_reprojection_and_assemble_back(tmp_path):
    out = tmp_path / "world"
    options = ["--domains", "3", "--areas", "1", "--patches", "1", "--patch-size", "16", "--no-sentinel"]
    options += ["--ortho-size", "200", "--products", "--products-crs", "EPSG:3857", "--products-resolution", "0.3"]
    result = CliRunner().invoke(data_app, ["synth", str(out), *options])
    assert result.exit_code == 0, result.output
    folder = out / "orthophotos"
    with rasterio.open(folder / "ORTHO_0.tif") as src:
        stacked, ortho_crs, ortho_transform = src.read(), src.crs, src.transform
    with rasterio.open(folder / "ORTHO_0_RVB.tif") as rvb, rasterio.open(folder / "ORTHO_0_DTM.tif") as dtm:
        assert rvb.crs == "EPSG:3857" and rvb.res == (0.3, 0.3) and dtm.res == (1.0, 1.0)
        expected = np.zeros((3, rvb.height, rvb.width), dtype=np.float32)
        reproject(
            stacked[:3].astype(np.float32),
            expected,
            src_transform=ortho_transform,
            src_crs=ortho_crs,
            dst_transform=rvb.transform,
            dst_crs=rvb.crs,
            resampling=Resampling.bilinear,
        )
        written = rvb.read().astype(np.float32)
    inner = (slice(None), slice(4, -4), slice(4, -4))  # edge pixels: GDAL's and a bare reproject's borders differ
    assert np.abs(written[inner] - expected[inner]).max() <= 1
    given = {
        "rgb": str(folder / "ORTHO_0_RVB.tif"),
        "nir": f"{folder / 'ORTHO_0_IRC.tif'}:1",
        "dsm": str(folder / "ORTHO_0_DSM.tif"),
        "dtm": str(folder / "ORTHO_0_DTM.tif"),
    }
    with pytest.raises(DataError, match=r"ORTHO_0_RVB.tif: pixels are 0.3 x 0.3 .*--allow-resample"):
        inspect_assembly(given, RGBIE)
    raster = inspect_assembly(given, RGBIE, crs="EPSG:2154")
    assert raster.crs == "EPSG:2154" and raster.resolution == (0.2, 0.2)
    assembled = read_all(raster, RGBIE).astype(np.float32)
    # Back on a 0.2 m Lambert-93 grid: the stacked orthophoto again, up to two bilinear resamplings.
    original = np.zeros(assembled.shape, dtype=np.float32)
    reproject(
        stacked.astype(np.float32),
        original,
        src_transform=ortho_transform,
        src_crs=ortho_crs,
        dst_transform=raster.transform,
        dst_crs=raster.crs,
        resampling=Resampling.nearest,
    )
    inside = (slice(None), slice(10, -10), slice(10, -10))
    assert np.abs(assembled[inside] - original[inside]).mean() < 12
    assert np.corrcoef(assembled[inside].ravel(), original[inside].ravel())[0, 1] > 0.9
    refused = CliRunner().invoke(data_app, ["synth", str(tmp_path / "x"), "--products-crs", "EPSG:3857"])
    assert refused.exit_code != 0 and "--products-crs applies with --products" in refused.output


def test_output_grid_input_warps_the_map_onto_the_rgb_sources_grid_like_rasterio_reproject(tmp_path):
    products(tmp_path)
    left, bottom, right, top = transform_bounds("EPSG:2154", "EPSG:32631", WEST, NORTH - HEIGHT * 0.2, WEST + 8, NORTH)
    cols, rows = int((right - left) / 0.5), int((top - bottom) / 0.5)
    rgb = np.random.default_rng(2).integers(1, 256, (3, rows, cols), dtype=np.uint8)
    write(tmp_path / "rvb_utm.tif", rgb, res=0.5, crs="EPSG:32631", origin=(left, top))
    given = [f"--input={kind}={path}" for kind, path in sources(tmp_path).items()]
    given[0] = f"--input=rgb={tmp_path / 'rvb_utm.tif'}"
    config = {**CONFIG, "detect": {**CONFIG["detect"], "crs": "EPSG:2154"}}
    torch.manual_seed(0)
    app = typer.Typer()
    app.command()(detect_command)
    maps = {}
    for grid in ("reference", "input"):
        config_path = tmp_path / f"{grid}.yaml"
        config_path.write_text(yaml.safe_dump({**config, "detect": {**config["detect"], "output_grid": grid}}))
        if grid == "reference":
            model = build_aerial_model(load_config(config_path), pretrained_encoder=False)
            torch.save(model.state_dict(), tmp_path / "w.pth")
        common = ["-c", str(config_path), "--checkpoint", str(tmp_path / "w.pth"), "--device", "cpu", "--no-progress"]
        result = CliRunner().invoke(app, [*given, "-o", str(tmp_path / f"{grid}.tif"), *common])
        assert result.exit_code == 0, result.output
        maps[grid] = rasterio.open(tmp_path / f"{grid}.tif")
    reference, on_input = maps["reference"], maps["input"]
    with reference, on_input:
        assert reference.crs == "EPSG:2154" and reference.res == (0.2, 0.2)
        assert on_input.crs == "EPSG:32631" and on_input.res == (0.5, 0.5)
        assert (on_input.width, on_input.height) == (cols, rows)
        expected = np.full((rows, cols), reference.nodata, dtype=np.uint8)
        reproject(
            reference.read(1),
            expected,
            src_transform=reference.transform,
            src_crs=reference.crs,
            src_nodata=reference.nodata,
            dst_transform=on_input.transform,
            dst_crs=on_input.crs,
            dst_nodata=reference.nodata,
            resampling=Resampling.nearest,
        )
        written = on_input.read(1)
        np.testing.assert_array_equal(written, expected)
        assert len(np.unique(written)) > 2 and on_input.nodata == reference.nodata
        assert on_input.colormap(1) == reference.colormap(1)


def test_output_grid_input_refuses_scores_and_polygons(tmp_path):
    for extra in ({"confidence": True}, {"vectorize": True}):
        config_path = tmp_path / "detect.yaml"
        config_path.write_text(
            yaml.safe_dump({**CONFIG, "detect": {**CONFIG["detect"], "output_grid": "input", **extra}})
        )
        with pytest.raises(ConfigError, match=r"detect\.output_grid=input warps the class map only"):
            resolve_settings(load_config(config_path), None, None)


def test_resume_refuses_an_assembly_whose_dsm_changed(tmp_path):
    data = products(tmp_path)
    config_path = tmp_path / "detect.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    settings = resolve_settings(load_config(config_path), None, None)
    raster = inspect_assembly(sources(tmp_path), RGBIE)
    work = WorkDir(tmp_path / "map.tif")
    work.create(work_manifest(raster, settings, "weights"))
    work.check_manifest(work_manifest(raster, settings, "weights"))
    dsm = tmp_path / "dsm.tif"
    before = dsm.stat().st_mtime_ns
    write(dsm, data["dsm"] + np.float32(1))
    os.utime(dsm, ns=(before + 10**9, before + 10**9))
    with pytest.raises(DataError, match=rf"cannot resume .*different dsm source {re.escape(str(dsm.resolve()))}"):
        work.check_manifest(work_manifest(raster, settings, "weights"))
