"""The real `flair` command line, end to end on a tiny generated world; its errors and warnings."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import typer
import yaml
from rasterio.transform import from_origin
from typer.testing import CliRunner

from flairkit.cli.common import console, error_console, guarded
from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.models.factory import build_aerial_model

runner = CliRunner()

DETECT_CONFIG = {
    "data": {"channels": [1, 2, 3], "nomenclature": "15cl"},
    "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
    "detect": {"tile_size": 64, "margin": 16, "batch_size": 4},
}
ORTHO_GRIDS = {
    "ortho": ("EPSG:2154", from_origin(843_000.0, 6_519_000.0, 0.2, 0.2)),
    "degrees": ("EPSG:4326", from_origin(2.35, 48.85, 2e-6, 2e-6)),
    "coarse": ("EPSG:2154", from_origin(843_000.0, 6_519_000.0, 0.5, 0.5)),
}
"""Small 3-band orthophotos: a good one, one in degrees and one of 0.5 m pixels (both mapped with a warning)."""

TINY_TRAIN = [
    "model.encoder=resnet18",
    "model.encoder_weights=null",
    "data.batch_size=4",
    "data.num_workers=0",
    "train.max_epochs=1",
    "train.accelerator=cpu",
    "train.devices=1",
]


def _sets(*settings: str) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "predict", "evaluate", "metrics", "detect", "models", "export", "data", "demo", "config"):
        assert command in result.output


def test_config_show_prints_the_resolved_yaml_and_bad_keys_exit_non_zero():
    shown = invoke("config", "show", "-c", "FLAIR-INC_rgb_15cl_resnet34-deeplabv3", "--set", "train.lr=0.5")
    assert shown.exit_code == 0 and "deeplabv3" in shown.output and "lr: 0.5" in shown.output
    bad = runner.invoke(app, ["config", "validate", "--set", "train.lrr=1"])
    assert bad.exit_code == 2
    assert "train.lrr: unknown key" in bad.output


@pytest.mark.slow
def test_train_evaluate_predict_and_metrics_from_the_command_line(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(console, "width", 250)  # tables whole, whatever the terminal running the tests
    common = ["-c", "demo", *_sets(f"data.root={tiny_world}", f"output_dir={tmp_path}", *TINY_TRAIN)]
    trained = invoke("train", *common, "--no-progress")
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "demo" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    again = runner.invoke(app, ["train", *common, "--no-progress"])
    assert again.exit_code == 2 and "--resume" in again.output

    evaluated = invoke("evaluate", tmp_path / "eval", *common, "--checkpoint", checkpoint, "--no-progress")
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "eval" / "metrics" / "metrics.json").read_text())
    assert "Metrics (flair1 protocol" in evaluated.output
    assert len(metrics["per_class_iou"]) == len(metrics["classes"])

    predicted = invoke("predict", tmp_path / "pred", *common, "--checkpoint", checkpoint, "--no-progress")
    assert predicted.exit_code == 0, predicted.output
    assert list((tmp_path / "pred").glob("PRED_IMG_*.tif"))

    scored = invoke("metrics", tmp_path / "pred", "--out", tmp_path / "scored", *common)
    assert scored.exit_code == 0, scored.output
    assert (tmp_path / "scored" / "metrics" / "confmat.npy").is_file()

    compared = invoke(
        "compare", tmp_path / "eval", tmp_path / "scored", "--published", "FLAIR-INC_rgbie_15cl_resnet34-unet"
    )
    assert compared.exit_code == 0, compared.output
    assert "54.7" in compared.output


def one_line_error(result) -> str:
    """The only line on stderr of a command that failed with exit code 2: an ``error:`` line, no traceback."""
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def detect_files(tmp_path_factory) -> dict[str, Path]:
    """The config and random weights of a 3-band U-Net, and the orthophotos of ``ORTHO_GRIDS``."""
    folder = tmp_path_factory.mktemp("detect")
    files = {"config": folder / "detect.yaml", "weights": folder / "weights.pth"}
    files["config"].write_text(yaml.safe_dump(DETECT_CONFIG))
    torch.manual_seed(0)
    torch.save(
        build_aerial_model(load_config(files["config"]), pretrained_encoder=False).state_dict(), files["weights"]
    )
    pixels = np.random.default_rng(0).integers(0, 255, (3, 96, 80), dtype=np.uint8)
    for name, (crs, transform) in ORTHO_GRIDS.items():
        files[name] = folder / f"{name}.tif"
        profile = {"driver": "GTiff", "width": 80, "height": 96, "count": 3, "dtype": "uint8"}
        with rasterio.open(files[name], "w", crs=crs, transform=transform, **profile) as dst:
            dst.write(pixels)
    return files


def detect_args(files: dict[str, Path], *inputs: Path, output: Path) -> list[str]:
    weights = ["-c", str(files["config"]), "--checkpoint", str(files["weights"])]
    return ["detect", *map(str, inputs), "-o", str(output), *weights, "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("width", [40, 300])
def test_errors_are_never_wrapped_whatever_the_terminal_width(tmp_path, monkeypatch, width):
    monkeypatch.setattr(error_console, "width", width)
    missing = tmp_path / ("deep_" * 30) / "missing.yaml"
    line = one_line_error(invoke("config", "show", "-c", missing))
    assert f"config file {missing} does not exist" in line


def test_config_show_prints_yaml_that_reads_back_at_a_narrow_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr(console, "width", 40)
    deep = tmp_path / ("deep_" * 30) / "runs"
    shown = invoke("config", "show", "-c", "demo", "--set", f"output_dir={deep}")
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.stdout)["output_dir"] == str(deep)


@pytest.mark.parametrize("place", ["/proc", "a regular file"])
def test_output_under_a_folder_that_cannot_hold_files_is_a_one_line_error(detect_files, tmp_path, place):
    if place == "/proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc file system (Linux only)")
        folder = Path("/proc")
    else:
        folder = tmp_path / "a_file"
        folder.write_text("not a folder")
    line = one_line_error(invoke(*detect_args(detect_files, detect_files["ortho"], output=folder / "map.tif")))
    assert str(folder) in line and "choose a" in line
    assert not (folder / "map.tif").exists()


LONG_NAME = "/data/" + "x" * 300
ANY_PLACE_FIX = "check that the path exists and that its folder can hold files, or choose another location"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.EIO, "Input/output error", "/data/o.tif"), f"Input/output error (/data/o.tif); {ANY_PLACE_FIX}"),
        (
            OSError(errno.ENAMETOOLONG, "File name too long", LONG_NAME),
            f"File name too long ({LONG_NAME}); choose a shorter path",
        ),
        (OSError("/data/o.tif: read failed\nat block 3"), f"/data/o.tif: read failed at block 3; {ANY_PLACE_FIX}"),
    ],
    ids=["input/output error", "name too long", "no errno, two lines"],
)
def test_any_os_error_is_a_one_line_error_naming_the_path(error, expected):
    @guarded
    def fails() -> None:
        raise error

    command = typer.Typer()
    command.command()(fails)
    assert one_line_error(CliRunner().invoke(command, [], catch_exceptions=False)) == f"error: {expected}"


def test_detect_prints_each_warning_once_without_a_source_line(detect_files, tmp_path):
    """Through the real entry point (python -m flairkit), at 40 columns: one whole line per warning."""
    inputs = (detect_files["degrees"], detect_files["coarse"])
    command = [sys.executable, "-m", "flairkit", *detect_args(detect_files, *inputs, output=tmp_path / "maps")]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"} | {"COLUMNS": "40"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    warned = {
        "coordinates are in degrees": f"{inputs[0]}: coordinates are in degrees (EPSG:4326); FLAIR models expect "
        "0.2 m pixels in a projected CRS such as EPSG:2154 - reproject with gdalwarp -t_srs EPSG:2154 -tr 0.2 0.2",
        "pixels are 0.5": f"{inputs[1]}: pixels are 0.5 x 0.5 m but FLAIR models were trained on 0.2 m; "
        "resample with gdalwarp -tr 0.2 0.2 for reliable maps",
    }
    for key, message in warned.items():
        assert [line for line in done.stderr.splitlines() if key in line] == [f"warning: {message}"], done.stderr
    assert "warnings.warn(" not in done.stderr and ".py:" not in done.stderr, done.stderr
    assert len(list((tmp_path / "maps").glob("*_landcover.tif"))) == 2
