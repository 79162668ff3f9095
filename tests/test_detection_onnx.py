"""`flair detect` runs an exported ONNX bundle with onnxruntime and gives the torch model's map."""

from __future__ import annotations

import numpy as np
import rasterio
import torch
from typer.testing import CliRunner

from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.detection.run import detect
from flairkit.models.build import build_model
from flairkit.models.checkpoints import load_model
from flairkit.models.export import OnnxSegmenter, export_bundle
from test_detection_run import write_ortho

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

    torch_map = detect(config, model, [ortho], tmp_path / "torch.tif", progress=False)
    onnx_model = load_model(config, bundle / "model.onnx")
    assert isinstance(onnx_model, OnnxSegmenter)
    detect(config, onnx_model, [ortho], tmp_path / "onnx.tif", progress=False)
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
