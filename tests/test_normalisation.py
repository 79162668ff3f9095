"""Normalisation layers that survive domain shift (issue 20 item 3): BatchNorm recalibration, GroupNorm, frozen BN."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops import FrozenBatchNorm2d

from conftest import tiny_config
from flairkit.config import load_config
from flairkit.errors import CheckpointError, ConfigError
from flairkit.models.build import build_model
from flairkit.models.export import export_bundle, load_bundle
from flairkit.models.factory import norm_groups
from flairkit.models.loader import load_model
from flairkit.training.recalibration import recalibrate_batchnorm
from flairkit.training.run import train

ONE_STEP = ("train.max_epochs=1", "train.limit_train_batches=1", "train.limit_val_batches=1")


def test_recalibration_gives_the_exact_statistics_of_the_features_over_all_patches():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    model = nn.Sequential(nn.Dropout(0.5), conv, nn.BatchNorm2d(4, momentum=0.3))
    model.train()
    batches = [torch.randn(n, 3, 6, 6) * 5 + 2 for n in (4, 4, 3)]
    batches[1] = batches[1] * 3 - 7  # batches from different "domains": their own statistics differ
    model(batches[0])  # running statistics that recalibration must replace

    assert recalibrate_batchnorm(model, batches) == 1

    with torch.no_grad():
        features = conv(torch.cat(batches)).transpose(0, 1).reshape(4, -1).double()
    bn = model[2]
    torch.testing.assert_close(bn.running_mean.double(), features.mean(dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), features.var(dim=1), rtol=1e-5, atol=1e-5)
    assert all(module.training for module in model.modules()), "the modules' modes are restored"


def test_recalibration_needs_batches_and_passes():
    with pytest.raises(ValueError, match="passes"):
        recalibrate_batchnorm(nn.BatchNorm2d(2), [], passes=0)
    with pytest.raises(ValueError, match="fewer than 2"):
        recalibrate_batchnorm(nn.BatchNorm2d(2), [])
    assert recalibrate_batchnorm(nn.GroupNorm(1, 2), [torch.ones(1, 2, 2, 2)]) == 0


def test_group_count_rule():
    assert [norm_groups(c) for c in (16, 48, 64, 512, 3)] == [16, 16, 32, 32, 1]


def _norm_layers(model: nn.Module) -> dict[type, int]:
    counts: dict[type, int] = {}
    for module in model.modules():
        if isinstance(module, (_BatchNorm, nn.GroupNorm, FrozenBatchNorm2d)):
            counts[type(module)] = counts.get(type(module), 0) + 1
    return counts


def test_group_norm_network_trains_and_its_checkpoint_loads_back(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path, "model.norm=group", *ONE_STEP)
    model = build_model(config, pretrained_encoder=False)
    assert set(_norm_layers(model)) == {nn.GroupNorm}
    assert all(m.num_groups == norm_groups(m.num_channels) for m in model.modules() if isinstance(m, nn.GroupNorm))

    result = train(config, progress=False)
    loaded = load_model(config, result.last_checkpoint)
    saved = torch.load(result.last_checkpoint, weights_only=True)["state_dict"]
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, saved[f"model.{key}"])
    bundle_config, bundle_model = load_bundle(export_bundle(config, loaded, tmp_path / "bundle"))
    assert bundle_config.model.norm == "group"
    image = torch.rand(1, len(config.data.channels), 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bundle_model(image), loaded(image))

    with pytest.raises(CheckpointError, match=r"model\.norm: the weights need group, the config has batch"):
        load_model(tiny_config(tiny_world, tmp_path), result.last_checkpoint)


def test_frozen_batchnorm_keeps_its_statistics_through_training(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path, "model.norm=frozen_batch", *ONE_STEP)
    L.seed_everything(config.train.seed, verbose=False)
    initial = build_model(config, pretrained_encoder=False).state_dict()
    assert not any(isinstance(m, _BatchNorm) for m in build_model(config, pretrained_encoder=False).modules())

    result = train(config, progress=False)
    trained = load_model(config, result.last_checkpoint).state_dict()
    frozen = [key for key in initial if key.rsplit(".", 1)[-1] in ("running_mean", "running_var")]
    assert frozen, "the network has frozen BatchNorm layers"
    for key in frozen + [key.replace("running_mean", "weight") for key in frozen]:
        torch.testing.assert_close(trained[key], initial[key])
    assert not torch.equal(trained["seg_model.encoder.conv1.weight"], initial["seg_model.encoder.conv1.weight"])


def test_training_writes_recalibrated_weights_beside_the_trained_ones(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path, "train.recalibrate_batchnorm=true", *ONE_STEP)
    result = train(config, progress=False)
    assert result.recalibrated_checkpoint == result.run_dir / "checkpoints" / "recalibrated.ckpt"
    last = load_model(config, result.last_checkpoint).state_dict()
    recalibrated = load_model(config, result.recalibrated_checkpoint).state_dict()
    key = "seg_model.encoder.bn1"
    torch.testing.assert_close(recalibrated[f"{key}.weight"], last[f"{key}.weight"])
    assert not torch.allclose(recalibrated[f"{key}.running_var"], last[f"{key}.running_var"])


def test_recalibration_of_a_network_without_batchnorm_is_refused():
    with pytest.raises(ConfigError, match=r"model\.norm=batch"):
        load_config("demo", ["model.norm=group", "train.recalibrate_batchnorm=true"])


def test_batchnorm_weights_fine_tune_into_frozen_batchnorm_keeping_their_statistics(tiny_world, tmp_path):
    base = train(tiny_config(tiny_world, tmp_path / "base", *ONE_STEP), progress=False)
    config = tiny_config(
        tiny_world,
        tmp_path / "tuned",
        *ONE_STEP,
        "model.norm=frozen_batch",
        f"train.init_weights={base.last_checkpoint}",
    )
    result = train(config, progress=False)
    assert any("model.norm=frozen_batch" in note for note in result.adaptations)
    trained = load_model(config, result.last_checkpoint).state_dict()
    saved = torch.load(base.last_checkpoint, weights_only=True)["state_dict"]
    for key in ("seg_model.encoder.bn1.running_var", "seg_model.decoder.blocks.0.conv1.1.running_mean"):
        torch.testing.assert_close(trained[key], saved[f"model.{key}"])


@pytest.mark.parametrize("norm", ["group", "frozen_batch"])
def test_onnx_bundle_of_other_norms_gives_the_same_logits(norm, tmp_path):
    config = load_config(
        "demo", ["model.encoder_weights=null", "detect.tile_size=64", "detect.margin=16", f"model.norm={norm}"]
    )
    torch.manual_seed(0)
    model = build_model(config, pretrained_encoder=False).eval()
    _, onnx_model = load_bundle(export_bundle(config, model, tmp_path / "bundle", onnx=True, tile_size=64), onnx=True)
    image = torch.rand(1, len(config.data.channels), 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(onnx_model(image)), model(image), rtol=1e-4, atol=1e-4)
