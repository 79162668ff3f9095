"""The smp model factory: architectures by name, channel and class counts, metadata fusion, key layout."""

import pytest
import torch

from flairkit.config import load_config
from flairkit.errors import ConfigError
from flairkit.models.factory import build_aerial_model, count_parameters
from flairkit.models.inference import masked_argmax


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
