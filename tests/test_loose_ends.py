"""Histogram references from ``flair data stats``, YAML nomenclatures in exported bundles, TTA in reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from typer.testing import CliRunner

from conftest import tiny_config
from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.data.datamodule import split_records
from flairkit.data.rasters import read_raster
from flairkit.data.stats import band_statistics
from flairkit.data.transforms import histogram_match
from flairkit.detection.report import detection_report_path, detection_section
from flairkit.detection.summary import DetectionSummary
from flairkit.errors import ConfigError
from flairkit.evaluation.predict import evaluate
from flairkit.models.build import build_model
from flairkit.models.export import export_bundle
from flairkit.models.weights import BUNDLE_NOMENCLATURE, read_bundle_config
from flairkit.nomenclature import get_nomenclature
from test_detection_run import write_ortho
from test_finetune import SIX


def test_data_stats_quantiles_match_numpy_and_load_as_histogram_reference(tiny_world, tmp_path):
    settings = [f"data.root={tiny_world}", "data.channels=[4,1,5]"]
    records = split_records(load_config(None, settings), "train")
    pixels = np.concatenate([read_raster(r.image, bands=[4, 1, 5]).reshape(3, -1) for r in records], axis=1)
    levels = np.linspace(0, 1, 9)
    expected = np.quantile(pixels, levels, axis=1).T  # linear method: rank k of n at level k / (n - 1)
    result = band_statistics(records, [4, 1, 5], quantiles=9)
    np.testing.assert_allclose(np.array(result.quantiles), expected, rtol=0, atol=1e-9)
    # histogram_match reads the same rank scale: matching the pixels to their own quantiles keeps them.
    full = band_statistics(records, [4, 1, 5], quantiles=pixels.shape[1])
    image = torch.from_numpy(pixels.astype(np.float32)).view(1, 3, 1, -1)
    assert torch.allclose(histogram_match(image, torch.tensor(full.quantiles)), image, atol=1e-3)

    output = tmp_path / "stats.yaml"
    command = ["data", "stats", "--set", settings[0], "--set", settings[1], "--quantiles", "9", "-o", str(output)]
    result_cli = CliRunner().invoke(app, command)
    assert result_cli.exit_code == 0, result_cli.output
    written = yaml.safe_load(output.read_text())["data"]["radiometric"]["histogram_reference"]
    np.testing.assert_allclose(written, expected, atol=0.0005)
    loaded = load_config(output, [*settings[1:], "data.radiometric.histogram_probability=0.5"])
    assert loaded.data.radiometric.histogram_reference == written
    without = tmp_path / "plain.yaml"
    plain = CliRunner().invoke(app, [*command[:-4], "-o", str(without)])
    assert plain.exit_code == 0 and "radiometric" not in yaml.safe_load(without.read_text())["data"]
    with pytest.raises(ConfigError, match="--quantiles"):
        band_statistics(records, [4, 1, 5], quantiles=1)


def test_tta_and_ensemble_passes_appear_in_metrics_json_and_both_reports(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path, "model.smp_kwargs={}", "evaluate.tta=flips")
    torch.manual_seed(0)
    model = build_model(config, pretrained_encoder=False).eval()
    evaluate(config, [model, model], tmp_path / "eval")
    inference = json.loads((tmp_path / "eval" / "metrics" / "metrics.json").read_text())["inference"]
    assert inference == {
        "tta": "flips",
        "models": 2,
        "forward_passes": 8,
        "summary": "tta flips x 2 models = 8 passes",
    }
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "forward passes per patch" in page and "tta flips x 2 models = 8 passes" in page
    assert "evaluate.tta" in page

    detect_config = config.model_copy(update={"detect": config.detect.model_copy(update={"tta": "d4"})})
    summary = DetectionSummary(
        maps=[], seconds=1.0, device="cpu", world_size=1, stitching="margin", passes="tta d4 x 2 models = 16 passes"
    )
    section = detection_section(detect_config, summary)
    assert "forward passes per tile" in section and "tta d4 x 2 models = 16 passes" in section
    assert "detect.tta" in section


def test_a_bundle_keeps_its_yaml_nomenclature_when_the_file_is_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAIRKIT_CACHE", str(tmp_path / "cache"))
    yaml_path = tmp_path / "mine" / "six.yaml"
    yaml_path.parent.mkdir()
    yaml_path.write_text(SIX.read_text().replace("name: water", "name: lakes"))
    settings = [
        "model.encoder=resnet18",
        "model.encoder_weights=null",
        "data.channels=[1,2,3]",
        f"data.nomenclature={yaml_path}",
        "detect.tile_size=64",
        "detect.margin=16",
        "detect.output_codes=index",
    ]
    config = load_config(None, settings)
    torch.manual_seed(0)
    bundle = export_bundle(config, build_model(config, pretrained_encoder=False), tmp_path / "bundle")
    assert (bundle / BUNDLE_NOMENCLATURE).read_text() == yaml_path.read_text()
    yaml_path.unlink()
    ortho = write_ortho(tmp_path / "ortho.tif", np.random.default_rng(0).integers(0, 256, (3, 64, 64), np.uint8))
    args = ["detect", str(ortho), "-o", str(tmp_path / "map.tif"), "--checkpoint", str(bundle), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    restored = read_bundle_config(bundle).data.nomenclature
    assert Path(restored).name == "six.yaml" and Path(restored).is_relative_to(tmp_path / "cache")
    classes = get_nomenclature(restored)
    assert "lakes" in classes.names
    with rasterio.open(tmp_path / "map.tif") as src:
        assert int(src.read(1).max()) < classes.n_targets
    assert "lakes" in detection_report_path(tmp_path / "map.tif").read_text()
    again = CliRunner().invoke(app, ["export", str(bundle), str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert "lakes" in (tmp_path / "again" / BUNDLE_NOMENCLATURE).read_text()
