"""Adapting weights to other classes and bands when fine-tuning (README, "Adapt a released model")."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import tiny_config
from fake_hub import FakeServer, serve, use_as_hub
from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.data.datamodule import split_records
from flairkit.data.rasters import read_raster
from flairkit.data.stats import band_statistics
from flairkit.errors import CheckpointError, ConfigError
from flairkit.models.build import build_model
from flairkit.models.weights import check_weights_config, config_from_checkpoint, load_init_weights, read_checkpoint
from flairkit.nomenclature import get_nomenclature
from flairkit.training.losses import satellite_class_weights
from flairkit.training.module import SegmentationTask
from flairkit.training.run import train

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "nomenclatures"
SIX = EXAMPLES / "flair19-to-6.yaml"
SMALL = ("model.encoder_weights=null", "model.encoder=resnet18")
HEAD = "seg_model.segmentation_head.0."
CONV1 = "seg_model.encoder.conv1.weight"
DISABLED_15CL = {15, 16, 17, 19}


def config(*overrides: str):
    return load_config(None, [*SMALL, *overrides])


def network(cfg, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg, pretrained_encoder=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 15cl RGBIE flairkit checkpoint with its config, and its network's state dict."""
    cfg = config()
    model = network(cfg, seed=3)
    path = tmp_path_factory.mktemp("weights") / "last.ckpt"
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"config": cfg.model_dump(mode="json")}}, path)
    return path, {key: value.clone() for key, value in model.state_dict().items()}


def test_another_nomenclature_needs_rebuild_head_then_grouped_classes_start_from_the_flair_rows(source):
    path, trained = source
    cfg = config(f"data.nomenclature={SIX}", f"train.init_weights={path}")
    with pytest.raises(CheckpointError, match=r"train\.rebuild_head=true"):
        load_init_weights(network(cfg, seed=5), cfg)
    cfg.train.rebuild_head = True
    model = network(cfg, seed=5)
    built = {key: value.clone() for key, value in model.state_dict().items()}
    report = load_init_weights(model, cfg)
    state = model.state_dict()
    assert torch.equal(state[CONV1], trained[CONV1])
    assert "mean weights, logsumexp biases" in report.adaptations[0]
    grouped = 0
    for target in get_nomenclature(SIX).targets:
        rows = [code - 1 for code in target.flair if code not in DISABLED_15CL]  # 15cl: target = code - 1
        weight, bias = state[HEAD + "weight"][target.index], state[HEAD + "bias"][target.index]
        if not rows:  # "other" groups only a disabled class: as built
            assert torch.equal(weight, built[HEAD + "weight"][target.index])
            assert torch.equal(bias, built[HEAD + "bias"][target.index])
            continue
        grouped += 1
        assert torch.allclose(weight, trained[HEAD + "weight"][rows].mean(dim=0))
        assert torch.allclose(bias, torch.logsumexp(trained[HEAD + "bias"][rows], dim=0))
    assert grouped == 6


def test_rebuild_head_still_refuses_other_bands(source):
    path, _ = source
    order = "data.channels=[3,2,1,4,5]"
    cfg = config(f"data.nomenclature={SIX}", f"train.init_weights={path}", "train.rebuild_head=true", order)
    with pytest.raises(
        CheckpointError, match=r"data\.channels: the weights need \[1, 2, 3, 4, 5\], the config has \[3, 2, 1, 4, 5\]"
    ):
        load_init_weights(network(cfg, seed=5), cfg)


def test_adapt_inputs_keeps_known_band_filters_and_gives_new_bands_their_mean(source, tmp_path):
    path, trained = source
    rgb = config("data.channels=[3,2,1]", f"train.init_weights={path}", "train.adapt_inputs=true")
    model = network(rgb, seed=5)
    report = load_init_weights(model, rgb)
    assert torch.equal(model.state_dict()[CONV1], trained[CONV1][:, [2, 1, 0]])
    assert "bands [4, 5] are dropped" in report.adaptations[0]
    # From the RGB model back to RGBIE: NIR and elevation start from the mean of the RGB filters.
    rgb_path = tmp_path / "rgb.ckpt"
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"config": rgb.model_dump(mode="json")}}, rgb_path)
    rgbie = config(f"train.init_weights={rgb_path}", "train.adapt_inputs=true")
    back = network(rgbie, seed=6)
    load_init_weights(back, rgbie)
    conv = back.state_dict()[CONV1]
    assert torch.equal(conv[:, :3], trained[CONV1][:, :3])
    mean = model.state_dict()[CONV1].mean(dim=1)
    assert torch.allclose(conv[:, 3], mean) and torch.allclose(conv[:, 4], mean)


def test_release_needs_a_released_preset(source):
    cfg = config("train.init_weights=release")
    with pytest.raises(ConfigError, match=r"train\.init_weights=release: the config has no release section"):
        load_init_weights(network(cfg, seed=5), cfg)


class _StatePerEpoch(L.Callback):
    """The network's state (weights and batch-norm statistics) at the start and after each training epoch."""

    def __init__(self):
        self.states: list[dict[str, torch.Tensor]] = []

    def _keep(self, pl_module: L.LightningModule) -> None:
        self.states.append({key: value.detach().clone() for key, value in pl_module.model.state_dict().items()})

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._keep(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._keep(pl_module)


def test_frozen_encoder_does_not_change_for_its_epochs_then_trains(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path, "train.freeze_encoder_epochs=1", "train.early_stopping_patience=null")
    seen = _StatePerEpoch()
    assert train(config, progress=False, callbacks=[seen]).epochs == 2
    start, frozen, trained = seen.states
    encoder = [key for key in start if key.startswith("seg_model.encoder.")]
    decoder = [key for key in start if key.startswith("seg_model.decoder.") and key.endswith("weight")]
    assert all(torch.equal(frozen[key], start[key]) for key in encoder)  # batch-norm statistics included
    assert any(not torch.equal(frozen[key], start[key]) for key in decoder)
    assert any(not torch.equal(trained[key], frozen[key]) for key in encoder if key.endswith("conv1.weight"))
    assert not torch.equal(trained["seg_model.encoder.bn1.running_mean"], frozen["seg_model.encoder.bn1.running_mean"])


def test_the_satellite_branch_ignores_the_class_of_plowed_land_whatever_its_code(tmp_path):
    path = tmp_path / "codes.yaml"
    path.write_text(
        "classes:\n"
        "  - {name: fields, code: 3, colour: '#ffffff', flair: [plowed land]}\n"
        "  - {name: town, code: 12, colour: '#000000', flair: [building]}\n"
        "  - {name: bare, code: 13, colour: '#aaaaaa', flair: [bare soil, snow]}\n"
    )
    assert satellite_class_weights(get_nomenclature(path)).tolist() == [0.0, 1.0, 1.0]
    grouped = EXAMPLES / "flair19-to-6.yaml"  # "bare" groups plowed land with classes the satellite sees
    assert satellite_class_weights(get_nomenclature(grouped)).tolist() == [1.0] * 6 + [0.0]
    assert satellite_class_weights(get_nomenclature("hub"))[get_nomenclature("hub").names.index("plowed land")] == 0


def test_data_stats_match_numpy_over_the_train_split_and_make_a_config_snippet(tiny_world, tmp_path):
    settings = [f"data.root={tiny_world}", "data.channels=[4,1,5]"]
    records = split_records(load_config(None, settings), "train")
    pixels = np.concatenate([read_raster(r.image, bands=[4, 1, 5]).reshape(3, -1) for r in records], axis=1)
    output = tmp_path / "stats.yaml"
    command = ["data", "stats", "--set", settings[0], "--set", settings[1], "-o", str(output)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(output.read_text())["data"]["normalization"]
    np.testing.assert_allclose(written["means"], pixels.mean(axis=1), atol=0.005)
    np.testing.assert_allclose(written["stds"], pixels.std(axis=1), atol=0.005)
    assert load_config(output, settings[1:]).data.normalization.means == written["means"]
    again = CliRunner().invoke(app, command)
    assert again.exit_code != 0 and "--overwrite" in again.output
    sampled = band_statistics(records, [4, 1, 5], sample=2, seed=1)
    assert sampled.patches == 2 and sampled.pixels == 2 * pixels.shape[1] // len(records)


def test_checkpoints_carry_their_nomenclature_yaml_and_are_compared_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAIRKIT_CACHE", str(tmp_path / "cache"))
    yaml_path = tmp_path / "mine" / "six.yaml"
    yaml_path.parent.mkdir()
    yaml_path.write_text(SIX.read_text())
    cfg = config(f"data.nomenclature={yaml_path}")
    task = SegmentationTask(cfg, model=network(cfg, seed=1))
    state = {f"model.{key}": value for key, value in task.model.state_dict().items()}
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 1, "hyper_parameters": dict(task.hparams)}, checkpoint)
    assert read_checkpoint(checkpoint).config["data"]["nomenclature"] == str(yaml_path)  # in place: kept as is
    moved = tmp_path / "elsewhere.yaml"
    yaml_path.rename(moved)
    restored = config_from_checkpoint(checkpoint)
    assert get_nomenclature(restored.data.nomenclature) == get_nomenclature(moved)
    assert Path(restored.data.nomenclature).name == "six.yaml"
    saved = read_checkpoint(checkpoint).config
    assert check_weights_config(config(f"data.nomenclature={moved}"), saved, "ckpt") == []
    moved.write_text(SIX.read_text().replace("name: water", "name: lakes"))
    with pytest.raises(CheckpointError, match=r"data\.nomenclature: the weights need .*six\.yaml"):
        check_weights_config(config(f"data.nomenclature={moved}"), saved, "ckpt")


def test_release_fine_tunes_a_released_preset_onto_your_nomenclature(monkeypatch, tmp_path):
    name = "FLAIR-INC_rgbi_12cl_resnet34-unet"  # released without a sha256: checked against the hub's ETag
    released = load_config(name)
    torch.manual_seed(0)
    model = build_model(released, pretrained_encoder=False)
    upload = tmp_path / "upload.pth"
    torch.save({key.removeprefix("seg_model."): value for key, value in model.state_dict().items()}, upload)
    with serve(FakeServer()) as hub:
        use_as_hub(monkeypatch, hub, tmp_path / "hf-home")
        hub.add_hub_file(released.release.hub_repo, released.release.filename, upload.read_bytes())
        cfg = load_config(name, [f"data.nomenclature={SIX}", "train.init_weights=release", "train.rebuild_head=true"])
        tuned = build_model(cfg, pretrained_encoder=False)
        report = load_init_weights(tuned, cfg)
    state, source = tuned.state_dict(), model.state_dict()
    assert torch.equal(state[CONV1], source[CONV1])
    water = get_nomenclature(SIX).names.index("water")
    assert torch.equal(state[HEAD + "weight"][water], source[HEAD + "weight"][4])  # 12cl: water is target 4
    assert "water <- water" in report.adaptations[0]
