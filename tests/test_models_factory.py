"""The smp model factory: architectures by name, channel and class counts, metadata fusion, key layout."""

import pytest
import torch

from flairkit.config import load_config
from flairkit.errors import ConfigError
from flairkit.models.factory import build_aerial_model, count_parameters
from flairkit.models.inference import fold_batchnorm, masked_argmax


def _config(*overrides):
    return load_config(None, ["model.encoder_weights=null", *overrides])


@pytest.mark.parametrize("arch", ["unet", "deeplabv3", "fpn"])
def test_architectures_by_name_give_one_logit_per_target(arch):
    model = build_aerial_model(_config(f"model.arch={arch}", "model.encoder=resnet18", "data.channels=[1,2,3]"))
    out = model.eval()(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 19, 64, 64)


def test_official_unet_resnet34_parameter_count_and_keys():
    model = build_aerial_model(_config())
    assert count_parameters(model) == 24_445_251
    assert all(key.startswith("seg_model.") for key in model.state_dict())


def test_metadata_mlp_is_added_to_the_deepest_map_and_changes_the_output():
    model = build_aerial_model(_config("model.encoder=resnet18", "data.metadata=true")).eval()
    assert {"enc.enc_mlp.0.weight", "enc.enc_mlp.3.weight", "enc.enc_mlp.6.weight"} <= set(model.state_dict())
    image = torch.rand(2, 5, 64, 64)
    first = model(image, torch.zeros(2, 45))
    second = model(image, torch.ones(2, 45))
    assert first.shape == (2, 19, 64, 64)
    assert not torch.allclose(first, second)
    with pytest.raises(ValueError, match="metadata"):
        model(image)


def test_unknown_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.encoder"):
        build_aerial_model(_config("model.encoder=resnet9000"))


def test_masked_argmax_never_returns_a_disabled_target():
    logits = torch.zeros(1, 4, 2, 2)
    logits[:, 2] = 10.0
    classes = masked_argmax(logits, [2])
    assert classes.dtype == torch.uint8
    assert 2 not in classes.unique().tolist()


def _calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with BatchNorm statistics away from their initial values, in eval mode."""
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64) * 3 + 1)
    return model.eval()


@pytest.mark.parametrize("arch", ["unet", "deeplabv3", "fpn"])
def test_fold_batchnorm_removes_every_batchnorm_and_keeps_the_logits(arch):
    torch.manual_seed(0)
    model = _calibrated(
        build_aerial_model(_config(f"model.arch={arch}", "model.encoder=resnet18", "data.channels=[1,2,3]"))
    )
    folded = fold_batchnorm(model, torch.rand(1, 3, 64, 64))
    assert folded is not model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is left as it was
    image = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected, got = model(image), folded(image)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


class SharedConvOutput(torch.nn.Module):
    """A convolution whose output feeds both a BatchNorm and a skip connection: it cannot be folded."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.norm(y) + y


def test_fold_batchnorm_leaves_a_model_whose_conv_output_is_reused():
    model = _calibrated(SharedConvOutput())
    assert fold_batchnorm(model, torch.rand(1, 3, 16, 16)) is model
