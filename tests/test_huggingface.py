"""HuggingFace transformers networks (FLAIR-1's ``HuggingFace`` provider): built offline, trained, mapped, exported,
inspected, and IGN's checkpoints loaded strictly to IGN's logits (fixtures of benchmarks/hf_official.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import from_origin
from typer.testing import CliRunner

from flairkit.cli import common as cli_common
from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.errors import CheckpointError, ConfigError
from flairkit.models.build import build_model
from flairkit.models.export import export_bundle, load_bundle
from flairkit.models.huggingface import HuggingFaceSegmenter
from flairkit.models.loader import load_model
from flairkit.models.weights import check_weights_config, inspect_checkpoint, load_init_weights, load_weights
from flairkit.models.zoo import model_info
from flairkit.training.freezing import aerial_encoder
from flairkit.training.run import build_trainer

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
TINY_SWIN = json.loads((FIXTURES / "config.json").read_text())
"""The tiny UperNet-Swin of the fixtures (4 to 32 channels, one block per stage)."""
TINY_OVERRIDES = {k: v for k, v in TINY_SWIN.items() if k != "model_type"}
HF = {
    "provider": "huggingface",
    "hf_model": "openmmlab/upernet-swin-small",
    "hf_config": TINY_OVERRIDES,
    "encoder_weights": None,
}
"""IGN's default network, shrunk by ``model.hf_config`` overrides."""


def write_config(folder: Path, **sections) -> Path:
    path = folder / "hf.yaml"
    data = {"data": {"nomenclature": "15cl"}, "model": HF, **sections}
    path.write_text(yaml.safe_dump(data))
    return path


def patch_weight(model: torch.nn.Module) -> torch.Tensor:
    return model.seg_model.backbone.swin.embeddings.patch_embeddings.projection.weight


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_builds_offline_with_the_bands_and_classes_of_the_config(no_network, tmp_path):
    config = load_config(write_config(tmp_path, data={"nomenclature": "15cl", "channels": [1, 2, 3, 4, 5]}))
    model = build_model(config).eval()
    assert isinstance(model, HuggingFaceSegmenter)
    assert aerial_encoder(model) is model.seg_model.backbone  # what train.freeze_encoder_epochs freezes
    assert patch_weight(model).shape[1] == 5
    with torch.no_grad():
        logits = model(torch.rand(2, 5, 40, 56))
    assert logits.shape == (2, 19, 40, 56)
    rgb = build_model(load_config(write_config(tmp_path, data={"nomenclature": "12cl", "channels": [1, 2, 3]})))
    assert patch_weight(rgb).shape[1] == 3
    with torch.no_grad():
        assert rgb.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 13, 32, 32)


def test_held_hub_config_builds_swin_small(no_network):
    config = load_config("flair1-upernet-swin-small", ["model.hf_pretrained=false"])
    with torch.device("meta"):
        model = build_model(config)
    swin = model.seg_model.config.backbone_config
    assert (swin.embed_dim, list(swin.depths), swin.num_channels) == (96, [2, 2, 18, 2], 5)
    assert model.seg_model.config.num_labels == 19
    ign = (config.train.optimizer, config.train.lr, config.data.batch_size, config.train.max_epochs, config.train.seed)
    assert ign == ("sgd", 0.02, 5, 3, 2022)  # IGNF/FLAIR-1 configs/flair-1-config.yaml
    assert config.data.normalization.means == [105.08, 110.87, 101.82, 106.38, 53.26]
    info = model_info("flair1-upernet-swin-small")  # what `flair models` lists
    assert (info["provider"], info["architecture"], info["encoder"]) == (
        "huggingface",
        "huggingface",
        "openmmlab/upernet-swin-small",
    )


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.hf_model"):
        load_config(None, ["model.provider=huggingface"])
    with pytest.raises(ConfigError, match=r"model\.provider=huggingface"):
        load_config(None, ["model.hf_model=openmmlab/upernet-swin-small"])
    unknown = load_config(None, ["model.provider=huggingface", "model.hf_model=someone/unknown"])
    with pytest.raises(ConfigError, match=r"model\.hf_config_file"):
        build_model(unknown)
    metadata = load_config(write_config(tmp_path, data={"metadata": True}))
    with pytest.raises(ConfigError, match=r"data\.metadata"):
        build_model(metadata)


@pytest.mark.parametrize("name", ["ign_lightning.ckpt", "ign_stripped.pt"])
def test_ign_checkpoints_load_strictly_to_ign_logits(name):
    """IGN's code under transformers 4.50.3 made the weights and logits (benchmarks/hf_official.py)."""
    hub_id = "model.hf_model=openmmlab/upernet-swin-small"
    sets = [
        "data.nomenclature=15cl",
        "model.provider=huggingface",
        hub_id,
        f"model.hf_config_file={FIXTURES}/config.json",
    ]
    config = load_config(None, sets)
    model = load_model(config, FIXTURES / name)
    batch = torch.load(FIXTURES / "batch.pt", weights_only=True)
    expected = torch.load(FIXTURES / "logits.pt", weights_only=True)
    with torch.no_grad():
        logits = model(batch)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    report = load_weights(build_model(config, pretrained_encoder=False), FIXTURES / name)
    assert report.layout == ("flair1-lightning" if name.endswith(".ckpt") else "transformers")


def test_mismatched_checkpoints_are_refused_clearly(tmp_path):
    three_bands = load_config(write_config(tmp_path, data={"nomenclature": "15cl", "channels": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match=r"5 input channels in the file, the config selects 3 \(data\.channels"):
        load_model(three_bands, FIXTURES / "ign_lightning.ckpt")
    smp = load_config("demo", ["model.encoder_weights=null"])
    with pytest.raises(CheckpointError, match=r"HuggingFace transformers.*model\.provider=huggingface"):
        load_model(smp, FIXTURES / "ign_lightning.ckpt")
    deeper = load_config(
        write_config(tmp_path, model={**HF, "hf_config": {"backbone_config": {"depths": [1, 1, 2, 1]}}})
    )
    with pytest.raises(CheckpointError, match="missing from the file"):
        load_model(deeper, FIXTURES / "ign_lightning.ckpt")


def test_weights_config_check_covers_the_provider_and_hub_id(tmp_path):
    config = load_config(write_config(tmp_path))
    saved = config.model_dump(mode="json")
    saved["model"]["hf_model"] = "openmmlab/upernet-convnext-tiny"
    with pytest.raises(CheckpointError, match=r"model\.hf_model: the weights need openmmlab/upernet-convnext-tiny"):
        check_weights_config(config, saved, "a bundle")
    saved["model"].update(provider="smp", hf_model=None)
    with pytest.raises(CheckpointError, match=r"model\.provider: the weights need smp"):
        check_weights_config(config, saved, "a bundle")


def test_pretrained_weights_come_from_the_hub_with_the_band_rule(tmp_path, monkeypatch):
    """The hub's RGB filters stay on bands 1-3; NIR and elevation get their mean; class heads stay as built."""
    rgb_config = load_config(write_config(tmp_path, data={"nomenclature": "12cl", "channels": [1, 2, 3]}))
    torch.manual_seed(1)
    hub_model = build_model(rgb_config)
    hub_file = tmp_path / "pytorch_model.bin"
    torch.save(hub_model.seg_model.state_dict(), hub_file)
    asked = []
    monkeypatch.setattr("flairkit.fetch.fetch_hub_file", lambda file, **kwargs: asked.append(file) or hub_file)
    model = {**HF, "hf_pretrained": True}
    config = load_config(write_config(tmp_path, model=model, data={"nomenclature": "15cl", "channels": [3, 4, 1, 5]}))
    built = build_model(config)
    assert [file.repo_id for file in asked] == ["openmmlab/upernet-swin-small"]
    rgb, weight = patch_weight(hub_model), patch_weight(built)
    torch.testing.assert_close(weight[:, 0], rgb[:, 2])
    torch.testing.assert_close(weight[:, 2], rgb[:, 0])
    torch.testing.assert_close(weight[:, 1], rgb.mean(dim=1))
    torch.testing.assert_close(weight[:, 3], rgb.mean(dim=1))
    head = built.seg_model.decode_head.classifier.weight
    assert head.shape[0] == 19 and hub_model.seg_model.decode_head.classifier.weight.shape[0] == 13
    assert build_model(config, pretrained_encoder=False) is not None and len(asked) == 1


def test_pretrained_weights_offline_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FLAIRKIT_OFFLINE", "1")
    config = load_config(write_config(tmp_path, model={**HF, "hf_pretrained": True}))
    with pytest.raises(CheckpointError, match=r"not in the hub cache.*model\.hf_pretrained=false"):
        build_model(config)


def test_bundle_reloads_the_network_and_onnx_export_is_refused_clearly(tmp_path):
    config = load_config(write_config(tmp_path, detect={"tile_size": 32, "margin": 8}))
    torch.manual_seed(0)
    model = build_model(config).eval()
    folder = export_bundle(config, model, tmp_path / "bundle")
    _, loaded = load_bundle(folder)
    image = torch.rand(1, 5, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))
    with pytest.raises(CheckpointError, match="without --onnx"):
        export_bundle(config, model, tmp_path / "onnx", onnx=True, tile_size=32)
    assert not (tmp_path / "onnx").exists()


@pytest.mark.slow
def test_train_inspect_export_and_detect_from_the_command_line(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_common.console, "width", 250)  # tables whole, whatever the terminal running the tests
    config = write_config(tmp_path, detect={"tile_size": 32, "margin": 8, "batch_size": 4})
    sets = [
        f"data.root={tiny_world}",
        f"output_dir={tmp_path}",
        "data.batch_size=4",
        "data.num_workers=0",
        "train.max_epochs=1",
        "train.accelerator=cpu",
        "train.devices=1",
        "name=hf",
    ]
    common = ["-c", str(config), *[arg for setting in sets for arg in ("--set", setting)]]
    runner = CliRunner()
    trained = runner.invoke(app, ["train", *common, "--no-progress"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "hf" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    info = inspect_checkpoint(checkpoint)
    assert (info["layout"], info["in_channels"], info["n_classes"]) == ("flair1-lightning", 5, 19)
    inspected = runner.invoke(app, ["models", "--inspect", str(checkpoint)])
    assert inspected.exit_code == 0, inspected.output
    assert "HuggingFace transformers" in inspected.output and "upernet" in inspected.output
    exported = runner.invoke(app, ["export", str(checkpoint), str(tmp_path / "bundle")])
    assert exported.exit_code == 0, exported.output
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "eval"), *common, "--checkpoint", str(checkpoint)])
    assert evaluated.exit_code == 0, evaluated.output
    assert (tmp_path / "eval" / "metrics" / "metrics.json").is_file()
    ortho = tmp_path / "ortho.tif"
    profile = {"driver": "GTiff", "width": 72, "height": 56, "count": 5, "dtype": "uint8", "crs": "EPSG:2154"}
    with rasterio.open(ortho, "w", transform=from_origin(843_000.0, 6_519_000.0, 0.2, 0.2), **profile) as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (5, 56, 72), dtype=np.uint8))
    for weights, stitching in ((checkpoint, "margin"), (tmp_path / "bundle", "blend")):
        out = tmp_path / f"map-{stitching}.tif"
        args = ["detect", str(ortho), "-o", str(out), "-c", str(config), "--checkpoint", str(weights)]
        args += ["--device", "cpu", "--no-progress", "--set", f"detect.stitching={stitching}"]
        detected = runner.invoke(app, args)
        assert detected.exit_code == 0, detected.output
        with rasterio.open(out) as src:
            assert src.shape == (56, 72)
            assert set(np.unique(src.read(1))) <= set(range(1, 20))


def test_ddp_tolerates_the_parameters_ignored_by_the_loss(tmp_path):
    """UperNet's auxiliary head and SwinBackbone's final norm get no gradient: DDP must not wait for them."""
    config = load_config(write_config(tmp_path, train={"strategy": "ddp", "accelerator": "cpu", "devices": 1}))
    trainer = build_trainer(config, tmp_path / "run", progress=False)
    assert trainer.strategy._ddp_kwargs.get("find_unused_parameters") is True


def test_other_architectures_from_a_config_file_give_logits_at_the_input_size(no_network, tmp_path):
    """SegFormer's logits are a quarter of the input: upsampled bilinearly, as transformers' UperNet does."""
    segformer = {
        "model_type": "segformer",
        "depths": [1, 1, 1, 1],
        "hidden_sizes": [8, 16, 32, 64],
        "num_attention_heads": [1, 1, 1, 1],
        "decoder_hidden_size": 16,
    }
    (tmp_path / "config.json").write_text(json.dumps(segformer))
    model = {
        "provider": "huggingface",
        "hf_model": "nvidia/segformer-b0",
        "hf_config_file": str(tmp_path / "config.json"),
    }
    config = load_config(write_config(tmp_path, model=model))
    network = build_model(config).eval()
    with torch.no_grad():
        assert network.seg_model(pixel_values=torch.rand(1, 5, 64, 96)).logits.shape == (1, 19, 16, 24)
        assert network(torch.rand(1, 5, 64, 96)).shape == (1, 19, 64, 96)
    assert (
        inspect_checkpoint_of(network, tmp_path)["network"] == "aerial segmentation network (HuggingFace transformers)"
    )
    folder = export_bundle(config, network, tmp_path / "bundle", onnx=True, tile_size=64)  # SegFormer exports
    _, graph = load_bundle(folder, onnx=True)
    image = torch.rand(2, 5, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(graph(image), network(image), rtol=1e-3, atol=1e-4)


def inspect_checkpoint_of(network: torch.nn.Module, folder: Path) -> dict:
    path = folder / "weights.pt"
    torch.save({f"model.{key}": value for key, value in network.state_dict().items()}, path)
    return inspect_checkpoint(path)


def test_fine_tuning_rebuilds_both_class_heads_and_adapts_the_patch_embedding(tmp_path):
    """train.rebuild_head rebuilds UperNet's decode and auxiliary heads for the new classes (12cl groups no 15cl
    class: they start as built); train.adapt_inputs keeps the patch embedding's filters of the bands the weights
    know; everything else comes from the weights."""
    source = load_config(write_config(tmp_path))
    torch.manual_seed(0)
    trained = build_model(source)
    checkpoint = tmp_path / "trained.ckpt"
    state = {f"model.{key}": value for key, value in trained.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"config": source.model_dump(mode="json")}}, checkpoint)
    train = {"init_weights": str(checkpoint), "rebuild_head": True, "adapt_inputs": True}
    config = load_config(write_config(tmp_path, data={"nomenclature": "12cl", "channels": [3, 1, 2]}, train=train))
    model = build_model(config, pretrained_encoder=False)
    heads = [getattr(model.seg_model, head).classifier for head in ("decode_head", "auxiliary_head")]
    built = [head.weight.detach().clone() for head in heads]
    report = load_init_weights(model, config)
    assert any("segmentation head rebuilt" in note for note in report.adaptations)
    for head, weight in zip(heads, built, strict=True):
        assert torch.equal(head.weight, weight) and head.weight.shape[0] == 13
    torch.testing.assert_close(patch_weight(model), patch_weight(trained)[:, [2, 0, 1]])
    norm = model.seg_model.backbone.hidden_states_norms.stage4.weight
    assert torch.equal(norm, trained.seg_model.backbone.hidden_states_norms.stage4.weight)
