"""Bundles: weights + config (+ ONNX) that reload to identical predictions, written atomically."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
import typer
from typer.testing import CliRunner

from flairkit.cli.export import export_command
from flairkit.config import load_config
from flairkit.errors import CheckpointError, ConfigError, OutputExistsError
from flairkit.models.build import build_model
from flairkit.models.export import export_bundle, load_bundle
from flairkit.models.loader import load_model
from flairkit.models.onnx import OnnxSegmenter
from flairkit.models.weights import inspect_checkpoint

TILE = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, above all on a busy machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(*overrides: str):
    return load_config(
        "demo", ["model.encoder_weights=null", f"detect.tile_size={TILE}", "detect.margin=16", *overrides]
    )


def tiny_model(config, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(config, pretrained_encoder=False).eval()


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    config = tiny_config()
    model = tiny_model(config)
    folder = export_bundle(config, model, tmp_path_factory.mktemp("bundles") / "onnx", onnx=True, tile_size=TILE)
    return config, model, folder


def test_bundle_reloads_to_identical_predictions(tmp_path):
    config = tiny_config(f"data.root={tmp_path}", "name=exported")
    model = tiny_model(config)
    folder = export_bundle(config, model, tmp_path / "bundle")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["name"] == "exported"
    assert saved["data"]["root"] is None  # only meaningful on the exporting machine
    loaded_config, loaded = load_bundle(folder)
    assert loaded_config.data.channels == config.data.channels
    assert not loaded.training
    image = torch.rand(2, 5, TILE, TILE)
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))
        assert torch.equal(load_model(loaded_config, folder)(image), model(image))
    assert inspect_checkpoint(folder)["layout"] == "flairkit"


@pytest.fixture
def umask_022():
    """A umask that lets other users read new files, as on most systems; restored afterwards."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_bundle_is_readable_by_other_users_unless_private(tmp_path, umask_022, cli):
    config = tiny_config()
    weights = tmp_path / "weights.pth"
    torch.save(
        {key.removeprefix("seg_model."): value for key, value in tiny_model(config).state_dict().items()}, weights
    )
    modes = {}
    for name, extra in (("shared", []), ("private", ["--private"])):
        result = cli(weights, tmp_path / name, "-c", "demo", "--set", "model.encoder_weights=null", *extra)
        assert result.exit_code == 0, result.output
        folder = tmp_path / name
        modes[name] = {path.name: stat.S_IMODE(path.stat().st_mode) for path in [folder, *folder.iterdir()]}
    assert modes["shared"] == {"shared": 0o755, "config.json": 0o644, "model.safetensors": 0o644}
    assert modes["private"] == {"private": 0o700, "config.json": 0o600, "model.safetensors": 0o600}


def test_existing_bundle_is_kept_unless_overwrite(tmp_path):
    config = tiny_config()
    folder = export_bundle(config, tiny_model(config, seed=1), tmp_path / "bundle")
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_bundle(config, tiny_model(config, seed=2), folder)
    assert (folder / "model.safetensors").read_bytes() == before
    export_bundle(config, tiny_model(config, seed=2), folder, overwrite=True)
    assert (folder / "model.safetensors").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging folders left behind


def test_model_that_does_not_match_the_config_is_not_exported(tmp_path):
    model = tiny_model(tiny_config("data.channels=[1,2,3]"))
    with pytest.raises(CheckpointError, match=r"3 input channels in the model, the config selects 5"):
        export_bundle(tiny_config(), model, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_bundle_weights_need_the_bundle_inputs(tmp_path):
    config = tiny_config()
    folder = export_bundle(config, tiny_model(config), tmp_path / "bundle")
    swapped = tiny_config("data.channels=[3,2,1,4,5]")
    with pytest.raises(CheckpointError, match=r"data\.channels: the weights need \[1, 2, 3, 4, 5\]"):
        load_model(swapped, folder)


def test_onnx_graph_matches_the_torch_model(onnx_bundle):
    _, model, folder = onnx_bundle
    segmenter = OnnxSegmenter(folder / "model.onnx")
    assert (segmenter.in_channels, segmenter.n_classes, segmenter.tile_shape) == (5, 19, (TILE, TILE))
    assert not segmenter.use_metadata
    image = torch.randn(3, 5, TILE, TILE)  # another batch size than the export's: the batch axis is dynamic
    with torch.no_grad():
        torch.testing.assert_close(segmenter(image), model(image), atol=1e-4, rtol=1e-4)
    _, loaded = load_bundle(folder, onnx=True)
    assert isinstance(loaded, OnnxSegmenter)


def test_onnx_graph_refuses_other_tile_sizes_clearly(onnx_bundle):
    segmenter = OnnxSegmenter(onnx_bundle[2] / "model.onnx")
    with pytest.raises(CheckpointError, match=rf"exported for {TILE}x{TILE} tiles.*detect\.tile_size={TILE}"):
        segmenter(torch.zeros(1, 5, 2 * TILE, 2 * TILE))


def test_onnx_graph_with_metadata_input(tmp_path):
    config = tiny_config("data.metadata=true", "model.encoder=resnet18", "data.channels=[1,2,3]")
    model = tiny_model(config)
    folder = export_bundle(config, model, tmp_path / "bundle", onnx=True, tile_size=TILE)
    segmenter = OnnxSegmenter(folder / "model.onnx")
    assert segmenter.use_metadata
    image, metadata = torch.randn(2, 3, TILE, TILE), torch.rand(2, 45)
    with torch.no_grad():
        torch.testing.assert_close(segmenter(image, metadata), model(image, metadata), atol=1e-4, rtol=1e-4)


def test_onnx_is_refused_for_the_multimodal_model(tmp_path):
    config = load_config("flair2-utt", ["model.encoder_weights=null", "model.encoder=resnet18"])
    with pytest.raises(ConfigError, match="aerial networks only"):
        export_bundle(config, torch.nn.Identity(), tmp_path / "bundle", onnx=True)


@pytest.fixture
def cli():
    app = typer.Typer()
    app.command("export")(export_command)
    app.command("other")(lambda: None)  # two commands, so that "export" is a subcommand as in `flair export`
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["export", *map(str, args)])


def test_export_command_from_a_plain_file_needs_a_config(cli, tmp_path):
    config = tiny_config()
    model = tiny_model(config)
    weights = tmp_path / "weights.pth"
    torch.save({key.removeprefix("seg_model."): value for key, value in model.state_dict().items()}, weights)
    result = cli(weights, tmp_path / "bundle")
    assert result.exit_code == 2
    assert "--config" in result.stderr
    result = cli(weights, tmp_path / "bundle", "-c", "demo", "--set", "model.encoder_weights=null")
    assert result.exit_code == 0, result.output
    _, loaded = load_bundle(tmp_path / "bundle")
    image = torch.rand(1, 5, TILE, TILE)
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))
    again = cli(tmp_path / "bundle", tmp_path / "copy")  # a bundle carries its own config
    assert again.exit_code == 0, again.output
    refused = cli(tmp_path / "bundle", tmp_path / "copy")
    assert refused.exit_code == 2
    assert "already exists" in refused.stderr


def test_export_command_uses_the_config_saved_in_a_flairkit_checkpoint(cli, tmp_path):
    config = tiny_config("name=trained")
    model = tiny_model(config)
    checkpoint = tmp_path / "last.ckpt"
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    torch.save(
        {"state_dict": state, "epoch": 2, "hyper_parameters": {"config": config.model_dump(mode="json")}}, checkpoint
    )
    result = cli(checkpoint, tmp_path / "bundle", "--onnx")
    assert result.exit_code == 0, result.output
    assert "model.onnx" in result.output
    loaded_config, _ = load_bundle(tmp_path / "bundle")
    assert loaded_config.name == "trained"
