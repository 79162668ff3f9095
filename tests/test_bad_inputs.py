"""Bad inputs through the entry points users hit: a message naming the file or key and the fix, a non-zero exit
code, and no output that looks complete.

Every case runs the ``flair`` command (``typer.testing.CliRunner`` on the real app) and, where cheaper, the
library function underneath. Each test damages its own copy of the tiny synthetic world.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine, from_origin
from safetensors.torch import save_file
from typer.testing import CliRunner

from flairkit.atomic import write_text_atomic
from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.data.datamodule import build_dataset
from flairkit.data.discovery import read_csv_list
from flairkit.data.scenes import ResolutionWarning, inspect_input
from flairkit.data.sentinel import load_centroids, load_sentinel_sample
from flairkit.detection.run import detect
from flairkit.errors import CheckpointError, DataError
from flairkit.hashing import file_sha256
from flairkit.models.build import build_model
from flairkit.models.loader import load_model
from flairkit.nomenclature import get_nomenclature

runner = CliRunner()

TINY = [
    "model.encoder=resnet18",
    "model.encoder_weights=null",
    "data.num_workers=0",
    "data.batch_size=4",
    "evaluate.batch_size=4",
    "train.max_epochs=1",
    "train.accelerator=cpu",
    "train.devices=1",
]
DETECT = ["detect.tile_size=64", "detect.margin=16", "detect.batch_size=4"]


def _flat(text: str) -> str:
    """Text without whitespace: rich wraps long messages (and paths) at the terminal width."""
    return re.sub(r"\s+", "", text)


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def sets(*settings: str) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def assert_fails(result, *expected: object, code: int = 2) -> None:
    """The command failed with ``code``, a message (no traceback) holding every ``expected`` piece."""
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    for piece in expected:
        assert _flat(str(piece)) in _flat(result.output), f"{piece!r} missing from:\n{result.output}"


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).exists() else []


def assert_no_partial_files(folder: Path) -> None:
    leftovers = [p for p in files_under(folder) if p.name.endswith(".part") or ".part" in p.parent.name]
    assert not leftovers, leftovers


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def world(tiny_world, tmp_path) -> Path:
    """A private copy of the tiny world that the test may damage."""
    return Path(shutil.copytree(tiny_world, tmp_path / "flair"))


def short_lists(world: Path, n_train: int = 4, n_eval: int = 2) -> list[str]:
    """Overrides pointing each split at the first lines of the world's CSV lists (one batch each)."""
    overrides = []
    for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        lines = (world / f"{split}.csv").read_text().splitlines()[:n]
        path = world / f"short_{split}.csv"
        path.write_text("\r\n".join(lines) + "\r\n")
        overrides.append(f"data.{split}_csv={path}")
    return overrides


def first_pair(world: Path, split: str = "train") -> tuple[Path, Path]:
    record = read_csv_list(world / f"{split}.csv")[0]
    assert record.mask is not None
    return record.image, record.mask


def rewrite(path: Path, change: Callable[[np.ndarray], np.ndarray], **profile_changes) -> None:
    """Rewrite a raster with ``change`` applied to its (bands, H, W) array."""
    with rasterio.open(path) as src:
        profile, array = src.profile, src.read()
    array = change(array)
    profile.update(count=array.shape[0], height=array.shape[1], width=array.shape[2], dtype=array.dtype.name)
    profile.update(profile_changes)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def _config(*overrides: str):
    return load_config("demo", [*TINY, *overrides])


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random weights of the tiny demo U-Net, as a safetensors file."""
    torch.manual_seed(0)
    model = build_model(load_config("demo", TINY), pretrained_encoder=False)
    path = tmp_path_factory.mktemp("weights") / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# ------------------------------------------------------------------------------------- damaged patches


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _with_codes_0_and_42(mask: np.ndarray) -> np.ndarray:
    mask = mask.copy()
    mask[0, 0, :2] = (0, 42)
    return mask


PATCH_DAMAGES: dict[str, tuple[str, Callable[[Path], None], list[str], str]] = {
    # name: (damaged file, damage, pieces of the train message, piece of the `flair data check` line)
    "truncated image": ("image", _truncate, ["the file is corrupt or truncated, replace it"], "corrupt or truncated"),
    "image not a TIFF": (
        "image",
        lambda p: p.write_bytes(b"this is not a GeoTIFF"),
        ["not recognized as being in a supported file format", "replace it"],
        "not recognized as being in a supported file format",
    ),
    "image with 3 bands": (
        "image",
        lambda p: rewrite(p, lambda a: a[:3]),
        ["has 3 band(s) but band(s) [4, 5] were requested", "select bands within 1..3 (data.channels)"],
        "has 3 band(s), FLAIR images have 5",
    ),
    "uint16 image": (
        "image",
        lambda p: rewrite(p, lambda a: a.astype(np.uint16) * 200),
        ["bands are uint16, FLAIR patches are uint8; convert the file"],
        "bands are uint16",
    ),
    "uint16 mask": (
        "mask",
        lambda p: rewrite(p, lambda a: a.astype(np.uint16) + 256),
        ["mask values are uint16, FLAIR masks are uint8 class codes", "convert it"],
        "values are uint16",
    ),
    "mask smaller than its image": (
        "mask",
        lambda p: rewrite(p, lambda a: a[:, :16, :16]),
        ["mask is 16x16 but image", "is 32x32; image and mask must have the same size"],
        "mask is 16x16 but its image is 32x32",
    ),
    "mask values out of range": (
        "mask",
        lambda p: rewrite(p, _with_codes_0_and_42),
        ["mask values [42] are not FLAIR classes (1..19); fix the mask"],
        "values [42] are no class of the 15cl nomenclature",
    ),
}


@pytest.mark.parametrize("case", list(PATCH_DAMAGES))
def test_damaged_patch_stops_training_naming_the_file(world, tmp_path, case):
    which, damage, pieces, _ = PATCH_DAMAGES[case]
    image, mask = first_pair(world)
    damaged = image if which == "image" else mask
    damage(damaged)
    lists = short_lists(world)

    # the library: the dataset item that training reads
    config = _config(*lists)
    with pytest.raises(DataError) as raised:
        build_dataset(config, read_csv_list(config.data.train_csv))[0]
    assert str(damaged) in str(raised.value)

    result = invoke("train", "-c", "demo", "--no-progress", *sets(*TINY, *lists, f"output_dir={tmp_path / 'runs'}"))
    assert_fails(result, damaged, *pieces)
    run = tmp_path / "runs" / "demo"
    assert not (run / "train_summary.json").exists()
    assert not list(run.rglob("*.ckpt"))


@pytest.mark.parametrize("case", list(PATCH_DAMAGES))
def test_data_check_flags_the_damaged_patch_as_fatal(world, case):
    which, damage, _, line = PATCH_DAMAGES[case]
    image, mask = first_pair(world)
    damaged = image if which == "image" else mask
    damage(damaged)
    result = invoke("data", "check", world, "--no-sentinel")
    assert_fails(result, f"FATAL {damaged}: ", line, "fatal problem(s)", "fix them before training", code=1)


def test_error_raised_in_a_loader_process_shows_the_message_not_a_traceback(world, tmp_path):
    image, _ = first_pair(world)
    _truncate(image)
    lists = short_lists(world)
    overrides = sets(*TINY, *lists, "data.num_workers=1", f"output_dir={tmp_path / 'runs'}")
    result = invoke("train", "-c", "demo", "--no-progress", *overrides)
    assert_fails(result, image, "the file is corrupt or truncated, replace it")
    assert "DataLoader worker" not in result.output


def test_bad_mask_in_evaluation_writes_no_metrics(world, tmp_path, weights):
    _, mask = first_pair(world, "test")
    rewrite(mask, lambda a: np.full_like(a, 99))
    out = tmp_path / "eval"
    overrides = sets(*TINY, *short_lists(world))
    result = invoke("evaluate", out, "-c", "demo", *overrides, "--checkpoint", weights, "--no-progress")
    assert_fails(result, mask, "mask values [99] are not FLAIR classes", "fix the mask")
    assert not (out / "metrics" / "metrics.json").exists()
    assert_no_partial_files(out)


# ------------------------------------------------------------------------------------------- CSV lists


def _csv_damages(world: Path) -> dict[str, tuple[bytes, list[str]]]:
    lines = (world / "train.csv").read_text().splitlines()[:4]
    return {
        "empty": (b"", ["the CSV list is empty", "add one 'image_path,mask_path' line per patch"]),
        "blank lines only": (b"\r\n \r\n", ["the CSV list is empty"]),
        "header line": (
            ("image,mask\r\n" + "\r\n".join(lines)).encode(),
            ["line 1", "(a header line?)", "FLAIR path lists have no header, remove it"],
        ),
        "three columns": (
            ("\r\n".join([lines[0], lines[1] + ",extra"])).encode(),
            ["line 2: expected 'image_path,mask_path' or 'image_path'", "write one patch per line"],
        ),
        "masks on some lines only": (
            ("\r\n".join([lines[0], lines[1].split(",")[0]])).encode(),
            ["line 2: has 1 column(s) but earlier lines have 2", "give a mask on every line or on none"],
        ),
        "not UTF-8": (b"\xff\xfe\x00garbage", ["cannot read the CSV list", "it must be a UTF-8 text file"]),
        "path that does not exist": (
            ("\r\n".join([lines[0], "nowhere/IMG_999999.tif,nowhere/MSK_999999.tif"])).encode(),
            ["2 listed file(s) do not exist", "line 2", "IMG_999999.tif", "fix the paths or run `flair data check"],
        ),
    }


CSV_CASES = ["empty", "blank lines only", "header line", "three columns", "masks on some lines only", "not UTF-8"]


@pytest.mark.parametrize("case", [*CSV_CASES, "path that does not exist"])
def test_bad_csv_list_fails_before_anything_is_written(world, tmp_path, case):
    content, pieces = _csv_damages(world)[case]
    bad = world / "bad.csv"
    bad.write_bytes(content)
    with pytest.raises(DataError):
        read_csv_list(bad)
    runs = tmp_path / "runs"
    lists = [*short_lists(world)[1:], f"data.train_csv={bad}"]
    result = invoke("train", "-c", "demo", "--no-progress", *sets(*TINY, *lists, f"output_dir={runs}"))
    assert_fails(result, bad, *pieces)
    assert not runs.exists(), files_under(runs)


@pytest.mark.parametrize("case", [*CSV_CASES, "path that does not exist"])
def test_data_check_of_a_bad_csv_list_exits_1(world, case):
    content, _ = _csv_damages(world)[case]
    bad = world / "bad.csv"
    bad.write_bytes(content)
    result = invoke("data", "check", bad)
    expected = "FATAL" if case != "path that does not exist" else "image file is missing"
    assert_fails(result, expected, code=1)


def test_missing_csv_list_is_refused_when_the_config_is_built(world, tmp_path):
    result = invoke("train", "-c", "demo", *sets(*TINY, f"data.train_csv={world / 'nope.csv'}"))
    assert_fails(result, "data.train_csv", "nope.csv", "does not exist; give the path of an existing file")


# ------------------------------------------------------------------------------------ metadata and Sentinel-2


def test_missing_metadata_entry_fails_before_training(world, tmp_path):
    metadata_file = world / "flair_aerial_metadata.json"
    entries = json.loads(metadata_file.read_text())
    del entries["IMG_000001"]
    metadata_file.write_text(json.dumps(entries))
    runs = tmp_path / "runs"
    overrides = sets(*TINY, *short_lists(world), "data.metadata=true", f"output_dir={runs}")
    result = invoke("train", "-c", "demo", "--no-progress", *overrides)
    assert_fails(result, "IMG_000001", metadata_file, "has no entry", "set data.metadata=false")
    assert not runs.exists()
    checked = invoke("data", "check", world, "--no-sentinel")
    assert_fails(checked, "IMG_000001 has no entry in", code=1)


def test_malformed_metadata_entry_names_the_field(world, tmp_path):
    metadata_file = world / "flair_aerial_metadata.json"
    entries = json.loads(metadata_file.read_text())
    entries["IMG_000001"]["date"] = "15/05/2021"
    metadata_file.write_text(json.dumps(entries))
    overrides = sets(*TINY, *short_lists(world), "data.metadata=true", f"output_dir={tmp_path / 'runs'}")
    result = invoke("train", "-c", "demo", "--no-progress", *overrides)
    assert_fails(result, metadata_file, "entry IMG_000001", "'date' should be 'YYYY-MM-DD'", "fix the entry")


def _sentinel_config(world: Path, *overrides: str):
    return _config(*short_lists(world), "data.sentinel.enabled=true", "data.sentinel.sat_patch_size=16", *overrides)


def test_centroid_outside_the_super_area_names_the_patch_and_the_fix(world):
    centroids_file = world / "flair-2_centroids_sp_to_patch.json"
    centroids = json.loads(centroids_file.read_text())
    centroids["IMG_000001.tif"] = [100, 100]
    centroids_file.write_text(json.dumps(centroids))
    config = _sentinel_config(world)
    with pytest.raises(DataError) as raised:
        build_dataset(config, read_csv_list(config.data.train_csv))[0]
    message = str(raised.value)
    assert "IMG_000001.tif in" in message and "_data.npy" in message
    assert "the centroid lies outside the super-area" in message
    assert "lower data.sentinel.sat_patch_size or fix the centroid" in message
    result = invoke("data", "check", world)
    assert_fails(result, "FATAL", "IMG_000001.tif", "the centroid lies outside the super-area", code=1)


def test_patch_without_centroid_entry_is_refused(world):
    centroids_file = world / "flair-2_centroids_sp_to_patch.json"
    centroids = json.loads(centroids_file.read_text())
    del centroids["IMG_000001.tif"]
    centroids_file.write_text(json.dumps(centroids))
    config = _sentinel_config(world)
    with pytest.raises(DataError, match=r"IMG_000001.tif has no entry in the centroids JSON.*disable Sentinel-2"):
        build_dataset(config, read_csv_list(config.data.train_csv))[0]
    assert_fails(invoke("data", "check", world), "IMG_000001.tif has no entry", code=1)


def test_malformed_centroid_entry_names_the_entry(world):
    centroids_file = world / "flair-2_centroids_sp_to_patch.json"
    centroids = json.loads(centroids_file.read_text())
    centroids["IMG_000001.tif"] = [1.5, "x"]
    centroids_file.write_text(json.dumps(centroids))
    with pytest.raises(DataError, match=r"entry 'IMG_000001.tif' should be \[row, col\] integers.*fix the entry"):
        load_centroids(centroids_file)


def _sentinel_dir(world: Path, image: Path) -> Path:
    record = build_dataset(_sentinel_config(world), read_csv_list(world / "train.csv")).records
    return next(r.sentinel_dir for r in record if r.image == image)


def test_nan_and_all_zero_dates_are_dropped_from_the_series(world):
    image, _ = first_pair(world)
    sen = _sentinel_dir(world, image)
    data_file = next(sen.glob("*_data.npy"))
    data = np.load(data_file).astype(np.float32)
    n_dates = data.shape[0]
    data[0, 3] = np.nan  # one NaN band: the date is unusable
    data[1] = 0  # an empty date
    np.save(data_file, data)
    config = _sentinel_config(world)
    centroid = load_centroids(world / "flair-2_centroids_sp_to_patch.json")[image.name]
    sample = load_sentinel_sample(sen, image.name, centroid, config.data.sentinel)
    assert sample.series.shape[0] == n_dates - 2
    assert np.isfinite(sample.series).all()
    item = build_dataset(config, read_csv_list(config.data.train_csv))[0]
    assert item["sentinel"].shape[0] == n_dates - 2 and torch.isfinite(item["sentinel"]).all()


def test_every_date_empty_warns_and_gives_finite_zeros(world):
    image, _ = first_pair(world)
    sen = _sentinel_dir(world, image)
    data_file = next(sen.glob("*_data.npy"))
    data = np.load(data_file).astype(np.float32)
    data[:] = 0
    data[::2] = np.nan
    np.save(data_file, data)
    config = _sentinel_config(world)
    with pytest.warns(RuntimeWarning, match="every Sentinel-2 date of a super-patch is empty"):
        item = build_dataset(config, read_csv_list(config.data.train_csv))[0]
    assert torch.isfinite(item["sentinel"]).all() and not item["sentinel"].any()


# ------------------------------------------------------------------------------------ orthophotos (detect)


def _ortho(world: Path, path: Path, crs: str | None, transform) -> Path:
    source = next((world / "orthophotos").glob("ORTHO_*.tif"))
    with rasterio.open(source) as src:
        profile, array = src.profile, src.read()
    profile.update(crs=crs, transform=transform)
    if crs is None:
        del profile["crs"]
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def _detect(ortho: Path, output: Path, weights: Path, *extra: object):
    overrides = sets(*TINY, *DETECT)
    return invoke(
        "detect", ortho, "-o", output, "-c", "demo", *overrides, "--checkpoint", weights, "--no-progress", *extra
    )


def test_orthophoto_without_crs_is_refused_before_any_output(world, tmp_path, weights):
    ortho = _ortho(world, tmp_path / "no_crs.tif", None, from_origin(0, 32, 0.2, 0.2))
    with pytest.raises(DataError, match="has no coordinate reference system"):
        inspect_input(ortho, [1, 2, 3, 4, 5])
    out = tmp_path / "maps"
    result = _detect(ortho, out / "map.tif", weights)
    assert_fails(result, ortho, "has no coordinate reference system", "gdal_edit.py -a_srs EPSG:2154")
    assert files_under(out) == []


def test_orthophoto_in_degrees_warns_with_the_reprojection_to_do(world, tmp_path, weights):
    """The model is CRS-agnostic but learnt 0.2 m pixels: a geographic CRS is mapped, with a warning."""
    ortho = _ortho(world, tmp_path / "wgs84.tif", "EPSG:4326", from_origin(2.35, 48.85, 2e-6, 2e-6))
    with pytest.warns(ResolutionWarning, match=r"coordinates are in degrees.*gdalwarp -t_srs EPSG:2154"):
        inspect_input(ortho, [1, 2, 3, 4, 5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _detect(ortho, tmp_path / "map.tif", weights)
    assert result.exit_code == 0, result.output
    assert any(issubclass(w.category, ResolutionWarning) and str(ortho) in str(w.message) for w in caught)
    with rasterio.open(tmp_path / "map.tif") as src:
        assert src.crs == rasterio.crs.CRS.from_epsg(4326)


# ------------------------------------------------------------------------------------------ output folders


def test_output_folder_that_cannot_be_created_is_named(world, tmp_path, weights):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    lists = short_lists(world)

    predicted = invoke("predict", blocker / "pred", "-c", "demo", *sets(*TINY, *lists), "--checkpoint", weights)
    assert_fails(predicted, "cannot create output folder", blocker / "pred", "choose a writable location")

    evaluated = invoke("evaluate", blocker / "eval", "-c", "demo", *sets(*TINY, *lists), "--checkpoint", weights)
    assert_fails(evaluated, "cannot create output folder", blocker / "eval", "choose a writable location")

    trained = invoke("train", "-c", "demo", "--no-progress", *sets(*TINY, *lists, f"output_dir={blocker}"))
    assert_fails(trained, "cannot create output folder", blocker / "demo", "choose a writable location")

    metrics = invoke("metrics", tmp_path, "--out", blocker, "-c", "demo", *sets(*TINY, *lists))
    assert_fails(metrics, "cannot create output folder", blocker / "metrics", "choose a writable location")

    ortho = next((world / "orthophotos").glob("ORTHO_*.tif"))
    detected = _detect(ortho, blocker / "maps" / "map.tif", weights)
    assert_fails(detected, "cannot create output folder", blocker, "choose a writable location")

    exported = invoke("export", weights, blocker / "bundle", "-c", "demo", *sets(*TINY))
    assert_fails(exported, "cannot create output folder", blocker, "choose a writable location")

    synthesized = invoke("data", "synth", blocker / "world")
    assert_fails(synthesized, blocker, "choose")
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(getattr(os, "geteuid", lambda: 0)() == 0, reason="root (or Windows) ignores folder permissions")
def test_read_only_output_folder_is_named(world, tmp_path, weights):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        lists = short_lists(world)
        result = invoke("predict", locked, "-c", "demo", *sets(*TINY, *lists), "--checkpoint", weights)
        assert_fails(result, locked, "is not writable", "fix its permissions or choose another output")
        assert files_under(locked) == []
    finally:
        locked.chmod(0o755)


# -------------------------------------------------------------------------------------------- full disk


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_writer_leaves_nothing_when_the_disk_fills(tmp_path, monkeypatch):
    target = tmp_path / "out" / "summary.json"
    monkeypatch.setattr(Path, "write_text", _no_space)
    with pytest.raises(OSError) as raised:
        write_text_atomic(target, "{}")
    assert raised.value.errno == errno.ENOSPC
    assert files_under(tmp_path / "out") == []


def test_full_disk_during_predict_leaves_no_prediction(world, tmp_path, weights, monkeypatch):
    real_open = rasterio.open

    def open_failing_on_write(path, mode="r", *args, **kwargs):
        if mode == "w":
            real_open(path, mode, *args, **kwargs).close()  # the file exists, then the disk is full
            _no_space()
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", open_failing_on_write)
    out = tmp_path / "pred"
    result = invoke("predict", out, "-c", "demo", *sets(*TINY, *short_lists(world)), "--checkpoint", weights)
    assert_fails(result, "PRED_IMG_", "cannot write the raster", "No space left on device", "check the free space")
    assert not list(out.glob("PRED_*.tif"))
    assert_no_partial_files(out)


def test_full_disk_while_writing_metrics_leaves_no_metrics_json(world, tmp_path, monkeypatch):
    lists = short_lists(world)
    predictions = tmp_path / "pred"
    predictions.mkdir()
    nomenclature = get_nomenclature("15cl")
    for record in read_csv_list(world / "short_test.csv"):
        with rasterio.open(record.mask) as src:
            profile, mask = src.profile, src.read(1)
        with rasterio.open(predictions / f"PRED_{record.image.stem}.tif", "w", **profile) as dst:
            dst.write(nomenclature.map_mask(mask)[None])
    monkeypatch.setattr(Path, "write_text", _no_space)
    out = tmp_path / "scores"
    result = invoke("metrics", predictions, "--out", out, "-c", "demo", *sets(*TINY, *lists))
    assert_fails(result, "no space left on the device", "free some space or write the outputs elsewhere")
    assert not (out / "metrics" / "metrics.json").exists()
    assert_no_partial_files(out)


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def deeplab_weights(tmp_path_factory) -> Path:
    # the defaults (5 bands, 15cl) with a DeepLabV3 network, instead of the demo preset's U-Net
    config = load_config(None, ["model.arch=deeplabv3", "model.encoder=resnet18", "model.encoder_weights=null"])
    model = build_model(config, pretrained_encoder=False)
    path = tmp_path_factory.mktemp("deeplab") / "deeplab.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_checkpoint_of_another_architecture_is_refused_naming_model_arch(world, tmp_path, deeplab_weights):
    expected = ["architecture: deeplabv3 in the file, the config builds unet (model.arch)", "fix the config"]
    with pytest.raises(CheckpointError) as raised:
        load_model(load_config("demo", TINY), deeplab_weights)
    assert all(piece in str(raised.value) for piece in expected)

    out = tmp_path / "pred"
    overrides = sets(*TINY, *short_lists(world))
    predicted = invoke("predict", out, "-c", "demo", *overrides, "--checkpoint", deeplab_weights)
    assert_fails(predicted, deeplab_weights, *expected)
    assert not out.exists()

    exported = invoke("export", deeplab_weights, tmp_path / "bundle", "-c", "demo", *sets(*TINY))
    assert_fails(exported, *expected)
    assert not (tmp_path / "bundle").exists()
    assert not list(tmp_path.glob(".bundle*"))


def test_file_that_is_not_a_checkpoint_is_refused(world, tmp_path):
    fake = tmp_path / "weights.pth"
    fake.write_text("<html>404 Not Found</html>")
    overrides = sets(*TINY, *short_lists(world))
    result = invoke("predict", tmp_path / "pred", "-c", "demo", *overrides, "--checkpoint", fake)
    assert_fails(result, fake, "looks like an HTML/XML page (a failed download?); download the weights again")
    assert not (tmp_path / "pred").exists()


def test_unknown_config_key_names_the_key(tmp_path):
    result = invoke("train", "-c", "demo", *sets("train.lrr=0.1"))
    assert_fails(result, "train.lrr: unknown key", "check its spelling")


# ----------------------------------------------------------------------------------- outputs that are inputs


def _ortho_copy(world: Path, path: Path) -> Path:
    return Path(shutil.copy(next((world / "orthophotos").glob("ORTHO_*.tif")), path))


def test_detect_refuses_output_that_is_its_input(world, tmp_path, weights):
    ortho = _ortho_copy(world, tmp_path / "same.tif")
    before = ortho.read_bytes()
    os.link(ortho, tmp_path / "hard.tif")
    (tmp_path / "link.tif").symlink_to(ortho)
    for output in (ortho, tmp_path / "hard.tif", tmp_path / "link.tif"):
        result = _detect(ortho, output, weights, "--overwrite")
        assert_fails(result, f"the output {output} is the input {ortho}", "writing it would destroy the input")
        assert "--overwrite" not in result.output
    assert ortho.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flair", "hard.tif", "link.tif", "same.tif"]


def _two_tile_vrt(world: Path, folder: Path, gap: slice) -> Path:
    """A VRT mosaic of two tiles of the world's orthophoto with the columns ``gap`` between them (no nodata)."""
    with rasterio.open(next((world / "orthophotos").glob("ORTHO_*.tif"))) as src:
        profile, data = src.profile, src.read()
    folder.mkdir(exist_ok=True)
    width, height, count = profile["width"], profile["height"], profile["count"]
    tiles = (("left.tif", 0, gap.start), ("right.tif", gap.stop, width))
    for name, start, stop in tiles:
        tile = profile | {"width": stop - start, "transform": profile["transform"] @ Affine.translation(start, 0)}
        with rasterio.open(folder / name, "w", **tile) as dst:
            dst.write(data[:, :, start:stop])
    geotransform = ", ".join(repr(v) for v in profile["transform"].to_gdal())
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">', f"<SRS>{profile['crs'].to_wkt()}</SRS>"]
    lines.append(f"<GeoTransform>{geotransform}</GeoTransform>")
    for band in range(1, count + 1):
        lines.append(f'<VRTRasterBand dataType="Byte" band="{band}">')
        for name, start, stop in tiles:
            size = f'xSize="{stop - start}" ySize="{height}"'
            lines.append(
                f'<SimpleSource><SourceFilename relativeToVRT="1">{name}</SourceFilename>'
                f'<SourceBand>{band}</SourceBand><SrcRect xOff="0" yOff="0" {size}/>'
                f'<DstRect xOff="{start}" yOff="0" {size}/></SimpleSource>'
            )
        lines.append("</VRTRasterBand>")
    (folder / "mosaic.vrt").write_text("\n".join([*lines, "</VRTDataset>"]))
    return folder / "mosaic.vrt"


def test_detect_refuses_output_that_is_a_vrt_source(world, tmp_path, weights):
    vrt = _two_tile_vrt(world, tmp_path / "tiles", slice(64, 96))
    left = tmp_path / "tiles" / "left.tif"
    before = left.read_bytes()
    result = _detect(vrt, left, weights, "--overwrite")
    assert_fails(result, f"the output {left} is the input {left}", "writing it would destroy the input")
    assert "--overwrite" not in result.output
    assert left.read_bytes() == before


def _write_config(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("preset: demo\nmodel:\n  encoder: resnet18\n  encoder_weights: null\n")
    return path


def test_predict_refuses_to_write_over_its_own_config_file(world, tmp_path, weights):
    config = _write_config(tmp_path / "out" / "config.yaml")
    before = config.read_text()
    result = invoke("predict", tmp_path / "out", "-c", config, *sets(*TINY, *short_lists(world)), "-w", weights)
    assert_fails(result, f"the output {config} is the input {config}", "choose another output path")
    assert "--overwrite" not in result.output
    assert config.read_text() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.yaml"]


def test_predict_refuses_two_patches_predicted_into_one_file(world, tmp_path, weights):
    image, mask = first_pair(world, "test")
    twin = Path(shutil.copytree(image.parent, tmp_path / "twin")) / image.name
    twins = tmp_path / "twins.csv"
    twins.write_text(f"{image},{mask}\n{twin},{mask}\n")
    out = tmp_path / "pred"
    result = invoke("predict", out, "-c", "demo", *sets(*TINY, f"data.test_csv={twins}"), "-w", weights)
    assert_fails(result, f"{image} and {twin} would both be predicted into {out / ('PRED_' + image.name)}")
    assert not out.exists()


# ---------------------------------------------------------------------- weights made for another config


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A flairkit Lightning checkpoint of the tiny demo U-Net, its config saved as hyper-parameter."""
    config = load_config("demo", TINY)
    torch.manual_seed(1)
    model = build_model(config, pretrained_encoder=False)
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    path = tmp_path_factory.mktemp("trained") / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"config": config.model_dump(mode="json")}}, path)
    return path


MISMATCHES = {
    "nomenclature": ("data.nomenclature=hub", "data.nomenclature: the weights need 15cl, the config has hub"),
    "band order": (
        "data.channels=[3,2,1,4,5]",
        "data.channels: the weights need [1, 2, 3, 4, 5], the config has [3, 2, 1, 4, 5]",
    ),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_weights_made_for_another_nomenclature_or_band_order_are_refused_by_every_command(
    world, tmp_path, trained_checkpoint, case, caplog
):
    setting, difference = MISMATCHES[case]
    ortho = next((world / "orthophotos").glob("ORTHO_*.tif"))
    lists = short_lists(world)
    out = tmp_path / "out"
    commands = {  # without --config: the checkpoint's own config, changed by --set
        "detect": ["detect", ortho, "-o", out / "map.tif", *sets(*DETECT, setting), "--no-progress"],
        "predict": ["predict", out / "pred", *sets(*lists, setting), "--no-progress"],
        "evaluate": ["evaluate", out / "eval", *sets(*lists, setting), "--no-progress"],
        "export": ["export", trained_checkpoint, out / "bundle", *sets(setting)],
        "predict -c": ["predict", out / "pred", "-c", "demo", *sets(*TINY, *lists, setting), "--no-progress"],
    }
    for name, args in commands.items():
        weights = [] if name == "export" else ["-w", trained_checkpoint]
        result = invoke(*args, *weights)
        assert_fails(result, difference, "to apply the weights anyway, set model.weights_config_check=warn")
    assert not out.exists()
    with caplog.at_level("WARNING"):
        allowed = invoke(*commands["predict"], "-w", trained_checkpoint, *sets("model.weights_config_check=warn"))
    assert allowed.exit_code == 0, allowed.output
    assert difference in caplog.text


def test_train_refuses_init_weights_of_another_nomenclature_saying_how_to_fine_tune(
    world, tmp_path, trained_checkpoint
):
    overrides = [*TINY, *short_lists(world), f"output_dir={tmp_path}", f"train.init_weights={trained_checkpoint}"]
    result = invoke("train", "-c", "demo", "--no-progress", *sets(*overrides, "data.nomenclature=13cl"))
    assert_fails(
        result,
        "data.nomenclature: the weights need 15cl, the config has 13cl",
        "to fine-tune onto another nomenclature on purpose, set model.weights_config_check=warn",
    )
    assert not list(tmp_path.rglob("*.ckpt"))


# --------------------------------------------------------------------------------- no-data in orthophotos


def _map(config_overrides: list[str], weights: Path, ortho: Path, output: Path):
    config = _config(*DETECT, "detect.backend=torch", *config_overrides)
    summary = detect(config, load_model(config, weights), [ortho], output)
    with rasterio.open(output) as src:
        return summary.maps[0], src.read(1), src.nodata


def test_vrt_gap_between_two_tiles_is_nodata_in_the_map(world, tmp_path, weights):
    vrt = _two_tile_vrt(world, tmp_path / "tiles", slice(64, 96))
    for setting in ("detect.all_zero_is_nodata=true", "detect.all_zero_is_nodata=false"):
        summary, classes, nodata = _map([setting], weights, vrt, tmp_path / setting / "map.tif")
        assert nodata == 0
        assert (classes[:, 64:96] == 0).all()
        assert (classes[:, :64] > 0).all() and (classes[:, 96:] > 0).all()
        assert summary.nodata_km2 == pytest.approx(160 * 32 * 0.04 / 1e6)
        assert "pixels that no source of the VRT covers" in summary.nodata_note


def _blacken(array: np.ndarray) -> np.ndarray:
    """Rows 0..39 all 0 (not imagery), but for a dark patch there whose near-infrared band alone is 1."""
    array = array.copy()
    array[:, :40] = 0
    array[3, :40, 60:70] = 1
    return array


def test_all_zero_pixels_are_nodata_and_a_dark_pixel_with_one_band_is_classified(world, tmp_path, weights):
    ortho = _ortho_copy(world, tmp_path / "dark.tif")
    rewrite(ortho, _blacken)
    missing = np.zeros((160, 160), dtype=bool)
    missing[:40] = True
    missing[:40, 60:70] = False
    summary, classes, _ = _map([], weights, ortho, tmp_path / "map.tif")
    assert (classes[missing] == 0).all() and (classes[~missing] > 0).all()
    assert summary.nodata_km2 == pytest.approx(missing.sum() * 0.04 / 1e6)
    assert "set detect.all_zero_is_nodata=false to classify them" in summary.nodata_note
    summary, classified, _ = _map(["detect.all_zero_is_nodata=false"], weights, ortho, tmp_path / "all.tif")
    assert (classified > 0).all() and summary.nodata_km2 == 0 and summary.nodata_note is None


# ---------------------------------------------------------------------------------------- stale predictions


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory) -> Path:
    """Other random weights of the same tiny U-Net."""
    torch.manual_seed(2)
    model = build_model(load_config("demo", TINY), pretrained_encoder=False)
    path = tmp_path_factory.mktemp("other") / "other.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _predict(out: Path, world: Path, weights: Path, *extra: str):
    return invoke("predict", out, "-c", "demo", *sets(*TINY, *short_lists(world, n_eval=4)), "-w", weights, *extra)


def test_predict_recomputes_kept_predictions_that_are_damaged(world, tmp_path, weights, caplog):
    out = tmp_path / "pred"
    assert _predict(out, world, weights).exit_code == 0
    first, second, *rest = sorted(out.glob("PRED_*.tif"))
    first.write_bytes(b"")
    rewrite(second, lambda a: a[:, :16, :16])
    with caplog.at_level("WARNING"):
        result = _predict(out, world, weights)
    assert result.exit_code == 0, result.output
    assert "wrote 2 prediction(s)" in " ".join(result.output.split())
    assert f"{first} is not a complete prediction of" in caplog.text
    for path in (first, second, *rest):
        with rasterio.open(path) as src:
            assert (src.count, src.dtypes[0], src.shape) == (1, "uint8", (32, 32))


def test_predict_refuses_to_mix_predictions_of_other_weights(world, tmp_path, weights, other_weights):
    out = tmp_path / "pred"
    assert _predict(out, world, weights).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"] == str(weights.resolve())
    assert manifest["weights_sha256"] == file_sha256(weights)
    assert manifest["settings"]["data.nomenclature"] == "15cl"
    assert load_config(out / "config.yaml").evaluate.checkpoint == weights.resolve()
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    result = _predict(out, world, other_weights)
    made_by = f"{weights.resolve()} (sha256 {file_sha256(weights)[:12]}...)"
    assert_fails(result, f"{out} holds predictions made by {made_by}, not by {other_weights.resolve()} (sha256")
    assert_fails(result, "pass --overwrite to predict them again or choose another folder")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    (out / "manifest.json").unlink()
    unknown = _predict(out, world, weights)
    assert_fails(unknown, f"{out} already holds predictions but no manifest.json saying which weights made them")

    replaced = _predict(out, world, other_weights, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "manifest.json").read_text())["weights_sha256"] == file_sha256(other_weights)
    assert load_config(out / "config.yaml").evaluate.checkpoint == other_weights.resolve()

    foreign = '{"dataset": "a file of the user, not a manifest of predictions"}'
    (out / "manifest.json").write_text(foreign)
    kept = _predict(out, world, other_weights, "--overwrite")
    assert_fails(kept, f"{out / 'manifest.json'} is not a manifest of flairkit predictions")
    assert (out / "manifest.json").read_text() == foreign


# ---------------------------------------------------------------------------------- leftovers of failures


def test_truncated_orthophoto_leaves_no_work_folder(world, tmp_path, weights):
    ortho = _ortho_copy(world, tmp_path / "truncated.tif")
    _truncate(ortho)
    out = tmp_path / "maps"
    result = _detect(ortho, out / "map.tif", weights)
    assert_fails(result, ortho, "the file may be corrupt or truncated")
    assert "kept in" not in result.output
    assert list(out.iterdir()) == []
