"""``flair detect`` on the command line: thin over the library, errors as messages with exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
import typer
import yaml
from rasterio.transform import from_origin
from typer.testing import CliRunner

from flairkit.cli.detect import detect_command
from flairkit.config import load_config
from flairkit.models.factory import build_aerial_model

app = typer.Typer()
app.command()(detect_command)
OVERRIDES = {
    "data": {"channels": [1, 2, 3], "nomenclature": "15cl"},
    "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
    "detect": {"tile_size": 64, "margin": 16, "batch_size": 4},
}


def write_ortho(path: Path, crs: str | None = "EPSG:2154") -> Path:
    data = np.random.default_rng(0).integers(0, 255, (3, 96, 80), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": 80, "height": 96, "count": 3, "dtype": "uint8"}
    profile["transform"] = from_origin(843_000.0, 6_519_000.0, 0.2, 0.2)
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_detect_command_maps_an_orthophoto_with_a_checkpoint(tmp_path):
    config_path = tmp_path / "detect.yaml"
    config_path.write_text(yaml.safe_dump(OVERRIDES))
    torch.manual_seed(0)
    network = build_aerial_model(load_config(config_path), pretrained_encoder=False)
    torch.save(network.state_dict(), tmp_path / "weights.pth")
    ortho = write_ortho(tmp_path / "ortho.tif")
    args = [
        str(ortho),
        "-o",
        str(tmp_path / "map.tif"),
        "-c",
        str(config_path),
        "--checkpoint",
        str(tmp_path / "weights.pth"),
    ]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--no-progress", "--set", "detect.stitching=blend"])
    assert result.exit_code == 0, result.output
    assert "km²/h" in result.output
    with rasterio.open(tmp_path / "map.tif") as src:
        assert src.shape == (96, 80) and src.nodata == 0
    again = CliRunner().invoke(app, [*args, "--device", "cpu", "--no-progress"])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_detect_command_reports_bad_inputs_and_options(tmp_path):
    ortho = write_ortho(tmp_path / "nocrs.tif", crs=None)
    config_path = tmp_path / "detect.yaml"
    config_path.write_text(yaml.safe_dump(OVERRIDES))
    network = build_aerial_model(load_config(config_path), pretrained_encoder=False)
    torch.save(network.state_dict(), tmp_path / "weights.pth")
    base = [str(ortho), "-o", str(tmp_path / "map.tif"), "-c", str(config_path), "--device", "cpu"]
    result = CliRunner().invoke(app, [*base, "--checkpoint", str(tmp_path / "weights.pth")])
    assert result.exit_code == 2 and "coordinate reference system" in result.output
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 2 and "--checkpoint" in result.output
    result = CliRunner().invoke(app, [*base, "--model", "demo"])
    assert result.exit_code == 2 and "either --config or --model" in result.output
