"""`flair detect` runs networks in ONNX Runtime on CPU (by default, or from an exported bundle) with torch's map."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from typer.testing import CliRunner

from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.detection.run import detect
from flairkit.errors import ConfigError
from flairkit.models.build import build_model
from flairkit.models.export import export_bundle
from flairkit.models.loader import load_model
from flairkit.models.onnx import OnnxSegmenter
from test_detection_run import ConstantModel, config, write_ortho

TILE = 64


def test_onnx_bundle_gives_the_same_map_as_the_torch_model(tmp_path):
    config = load_config(
        "demo",
        ["model.encoder=resnet18", "model.smp_kwargs={}", f"detect.tile_size={TILE}", "detect.margin=16"],
    )
    torch.manual_seed(0)
    model = build_model(config, pretrained_encoder=False).eval()
    bundle = export_bundle(config, model, tmp_path / "bundle", onnx=True, tile_size=TILE)
    rng = np.random.default_rng(0)
    ortho = write_ortho(tmp_path / "ortho.tif", rng.integers(0, 256, (5, 150, 170), dtype=np.uint8))

    torch_config = config.model_copy(update={"detect": config.detect.model_copy(update={"backend": "torch"})})
    torch_map = detect(torch_config, model, [ortho], tmp_path / "torch.tif")
    assert torch_map.backend == "torch"
    onnx_model = load_model(config, bundle / "model.onnx")
    assert isinstance(onnx_model, OnnxSegmenter)
    detect(config, onnx_model, [ortho], tmp_path / "onnx.tif")
    with rasterio.open(tmp_path / "torch.tif") as a, rasterio.open(tmp_path / "onnx.tif") as b:
        agreement = (a.read(1) == b.read(1)).mean()
    assert torch_map.maps and agreement >= 0.999

    result = CliRunner().invoke(
        app,
        ["detect", str(ortho), "-o", str(tmp_path / "cli.tif"), "-w", str(bundle / "model.onnx"), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "onnx.tif") as a, rasterio.open(tmp_path / "cli.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_cpu_detection_runs_onnx_runtime_by_default_with_the_torch_map(tmp_path):
    overrides = ["model.encoder=resnet18", "model.smp_kwargs={}", "detect.margin=16"]
    auto = load_config("demo", overrides)
    torch.manual_seed(0)
    model = build_model(auto, pretrained_encoder=False).eval()
    rng = np.random.default_rng(1)
    ortho = write_ortho(tmp_path / "ortho.tif", rng.integers(0, 256, (5, 150, 170), dtype=np.uint8))
    fast = detect(auto, model, [ortho], tmp_path / "auto.tif")
    plain_config = load_config("demo", [*overrides, "detect.backend=torch"])
    plain = detect(plain_config, model, [ortho], tmp_path / "torch.tif")
    assert (fast.backend, plain.backend) == ("ONNX Runtime", "torch")
    assert fast.maps[0].tile_size == plain.maps[0].tile_size == 224  # one tile: 170 + 2 * 16 -> 224, not 1536
    with rasterio.open(tmp_path / "auto.tif") as a, rasterio.open(tmp_path / "torch.tif") as b:
        assert (a.read(1) == b.read(1)).mean() >= 0.999


def test_onnx_backend_refuses_a_network_onnx_runtime_cannot_run(tmp_path):
    ortho = write_ortho(tmp_path / "ortho.tif", np.zeros((5, 40, 40), dtype=np.uint8))
    with pytest.raises(ConfigError, match=r"detect\.backend=onnx.*set detect\.backend=auto or torch"):
        detect(config("detect.backend=onnx"), ConstantModel(2), [ortho], tmp_path / "map.tif")
