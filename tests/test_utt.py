"""U-T&T: official layout and size, fusion, modality dropout, padding, checkpoint round trip."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torchvision.transforms import CenterCrop

from conftest import TINY_UTAE
from flairkit.config.loading import config_from_dict, deep_merge
from flairkit.config.schema import FlairConfig
from flairkit.errors import ConfigError
from flairkit.models.factory import count_parameters
from flairkit.models.utt import UTT, build_utt_model, centre_crop, satellite_footprint

AERIAL = 64
N_CLASSES = 13
BASE: dict[str, Any] = {
    "data": {"channels": [1, 2, 3, 4, 5], "nomenclature": "13cl", "sentinel": {"enabled": True, "sat_patch_size": 16}},
    "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None, "multimodal": True},
}


def make_config(**sections: Any) -> FlairConfig:
    return config_from_dict(deep_merge(BASE, sections))


def build_tiny(fusion: dict[str, Any] | None = None, data: dict[str, Any] | None = None, **model: Any) -> UTT:
    """A small U-T&T in eval mode with non-trivial BatchNorm statistics, as a trained model has."""
    torch.manual_seed(0)
    config = make_config(data=data or {}, model={"utae": TINY_UTAE, "fusion": fusion or {}, **model})
    net = build_utt_model(config, pretrained_encoder=False)
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return net.eval()


def inputs(
    batch: int, dates: int, sat: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    aerial = torch.rand(batch, 5, AERIAL, AERIAL, generator=generator, dtype=dtype)
    sentinel = torch.rand(batch, dates, 10, sat, sat, generator=generator, dtype=dtype) + 0.01
    positions = torch.randint(-120, 240, (batch, dates), generator=generator).to(dtype)
    return aerial, sentinel, positions


@pytest.fixture(scope="module")
def official() -> UTT:
    """The FLAIR #2 U-T&T exactly as IGN trained it (flair-2-config.yml: 5 bands, 13 classes, aerial_metadata on)."""
    config = make_config(data={"metadata": True}, model={"encoder": "resnet34"})
    return build_utt_model(config, pretrained_encoder=False).eval()


@pytest.fixture(scope="module")
def tiny() -> UTT:
    return build_tiny()


@pytest.fixture(scope="module")
def tiny64() -> UTT:
    """Float64 copy: sample-independence checks need it, as float32 convolutions of the smp U-Net alone differ by
    ~3e-5 between batch sizes."""
    return build_tiny().double()


def test_official_parameter_counts(official: UTT) -> None:
    assert count_parameters(official) == 27_260_296
    assert count_parameters(official.arch_vhr) == 24_444_381
    assert count_parameters(official.arch_hr) == 2_284_199
    assert official.mtd_mlp is not None
    assert count_parameters(official.mtd_mlp) == 5_552


def test_official_state_dict_layout(official: UTT) -> None:
    state = official.state_dict()
    prefixes = (
        "arch_vhr.",
        "arch_hr.",
        "fm_utae_featmap_cropped.conv_list.",
        "fm_utae_featmap_collapsed.mlps.",
        "mtd_mlp.enc_mlp.",
        "reshape_utae_output.1.",
    )
    assert all(key.startswith(prefixes) for key in state)
    assert all(any(key.startswith(p) for key in state) for p in prefixes)
    stage_channels = [5, 64, 64, 128, 256, 512]
    for stage, channels in enumerate(stage_channels):
        assert state[f"fm_utae_featmap_cropped.conv_list.{stage}.weight"].shape == (channels, 64, 1, 1)
        assert state[f"fm_utae_featmap_collapsed.mlps.{stage}.6.weight"].shape[0] == channels
        assert state[f"fm_utae_featmap_collapsed.mlps.{stage}.0.weight"].shape[1] == 64
    assert state["fm_utae_featmap_collapsed.mlps.0.0.weight"].shape == (45, 64)
    assert state["fm_utae_featmap_collapsed.mlps.1.3.weight"].shape == (128, 128)
    assert state["fm_utae_featmap_collapsed.mlps.5.3.weight"].shape == (362, 213)
    assert state["mtd_mlp.enc_mlp.0.weight"].shape == (64, 45)
    assert state["mtd_mlp.enc_mlp.6.weight"].shape == (16, 32)
    assert state["reshape_utae_output.1.weight"].shape == (N_CLASSES, 64, 1, 1)
    assert state["arch_vhr.segmentation_head.0.weight"].shape == (N_CLASSES, 16, 3, 3)
    assert state["arch_hr.temporal_encoder.attention_heads.Q"].shape == (16, 4)


def test_official_model_runs_on_small_inputs(official: UTT) -> None:
    aerial, sentinel, positions = inputs(2, 3)
    with torch.no_grad():
        aerial_logits, sat_logits = official(aerial, sentinel, positions, metadata=torch.rand(2, 45))
    assert aerial_logits.shape == sat_logits.shape == (2, N_CLASSES, AERIAL, AERIAL)


@pytest.mark.parametrize("sat", [16, 24])
@pytest.mark.parametrize(("batch", "dates"), [(1, 1), (2, 4), (3, 2)])
def test_shapes_through_every_stage(tiny: UTT, batch: int, dates: int, sat: int) -> None:
    aerial, sentinel, positions = inputs(batch, dates, sat)
    with torch.no_grad():
        maps = tiny.arch_hr.feature_maps(sentinel, positions)
        assert [tuple(m.shape) for m in maps] == [
            (batch, 32, sat // 8, sat // 8),
            (batch, 32, sat // 4, sat // 4),
            (batch, 16, sat // 2, sat // 2),
            (batch, 16, sat, sat),
        ]
        crop = centre_crop(maps[-1], satellite_footprint((AERIAL, AERIAL), (sat, sat)))
        pooled = maps[-1].mean(dim=(-2, -1))
        features = tiny.arch_vhr.encoder(aerial)
        assert [f.shape[1] for f in features] == [5, 64, 64, 128, 256, 512]
        for stage, feature in enumerate(features):
            assert tiny.fm_utae_featmap_cropped(crop, stage, feature.shape[-2:]).shape == feature.shape
            assert tiny.fm_utae_featmap_collapsed(pooled, stage).shape == (batch, feature.shape[1], 1, 1)
        aerial_logits, sat_logits = tiny(aerial, sentinel, positions)
    assert aerial_logits.shape == sat_logits.shape == (batch, N_CLASSES, AERIAL, AERIAL)
    assert torch.isfinite(aerial_logits).all() and torch.isfinite(sat_logits).all()


def test_padded_dates_do_not_change_a_sample(tiny64: UTT) -> None:
    short = inputs(1, 3, seed=1, dtype=torch.float64)
    long_ = inputs(1, 5, seed=2, dtype=torch.float64)
    aerial = torch.cat([short[0], long_[0]])
    sentinel = torch.cat([torch.cat([short[1], short[1].new_zeros(1, 2, 10, 16, 16)], dim=1), long_[1]])
    positions = torch.cat([torch.cat([short[2], short[2].new_zeros(1, 2)], dim=1), long_[2]])
    with torch.no_grad():
        alone = tiny64(*short)
        in_batch = tiny64(aerial, sentinel, positions)
    for a, b in zip(alone, in_batch, strict=True):
        torch.testing.assert_close(b[:1], a, atol=1e-5, rtol=0)


def test_collapsed_fusion_per_sample_or_official_first_sample() -> None:
    aerial, sentinel, positions = inputs(2, 3, dtype=torch.float64)
    other_sentinel = torch.cat([sentinel[:1], sentinel[:1]])
    for official_bug in (False, True):
        model = build_tiny(fusion={"mode": "collapsed", "official_batch_collapse": official_bug}).double()
        with torch.no_grad():
            logits, _ = model(aerial, sentinel, positions)
            logits_first_twice, _ = model(aerial, other_sentinel, positions)
            alone, _ = model(aerial[1:], sentinel[1:], positions[1:])
        # the official bug feeds sample 0's satellite summary to every sample of the batch
        difference = (logits[1] - logits_first_twice[1]).abs().max()
        assert (difference < 1e-5) if official_bug else (difference > 1e-4)
        torch.testing.assert_close(logits[:1], logits_first_twice[:1], atol=1e-5, rtol=0)
        assert torch.allclose(logits[1:], alone, atol=1e-5) is not official_bug


def test_drop_sentinel_gives_the_aerial_only_path(tiny: UTT) -> None:
    aerial, sentinel, positions = inputs(2, 3)
    with torch.no_grad():
        dropped, dropped_sat = tiny(aerial, sentinel, positions, drop_sentinel=True)
        fused, fused_sat = tiny(aerial, sentinel, positions)
        aerial_only = tiny.arch_vhr(aerial)
    torch.testing.assert_close(dropped, aerial_only, atol=1e-6, rtol=0)
    assert (fused - dropped).abs().max() > 1e-4
    torch.testing.assert_close(dropped_sat, fused_sat)


def test_metadata_reaches_the_aerial_branch_even_without_sentinel() -> None:
    model = build_tiny(data={"metadata": True})
    aerial, sentinel, positions = inputs(2, 2)
    metadata = torch.rand(2, 45)
    with torch.no_grad():
        reference, _ = model(aerial, sentinel, positions, metadata, drop_sentinel=True)
        other_sentinel, _ = model(aerial, sentinel.flip(0), positions, metadata, drop_sentinel=True)
        other_metadata, _ = model(aerial, sentinel, positions, metadata.flip(0), drop_sentinel=True)
    torch.testing.assert_close(reference, other_sentinel)
    assert (reference - other_metadata).abs().max() > 1e-5
    with pytest.raises(ValueError, match="metadata"):
        model(aerial, sentinel, positions)


@pytest.mark.parametrize(
    ("mode", "present", "absent"), [("cropped", "cropped", "collapsed"), ("collapsed", "collapsed", "cropped")]
)
def test_single_fusion_modes_hold_only_their_modules(mode: str, present: str, absent: str) -> None:
    model = build_tiny(fusion={"mode": mode})
    keys = model.state_dict().keys()
    assert any(k.startswith(f"fm_utae_featmap_{present}.") for k in keys)
    assert not any(k.startswith((f"fm_utae_featmap_{absent}.", "mtd_mlp.")) for k in keys)
    aerial, sentinel, positions = inputs(1, 2)
    with torch.no_grad():
        fused, _ = model(aerial, sentinel, positions)
        dropped, _ = model(aerial, sentinel, positions, drop_sentinel=True)
    assert (fused - dropped).abs().max() > 1e-5


def test_state_dict_round_trip(tiny: UTT, tmp_path) -> None:
    path = tmp_path / "utt.pt"
    torch.save(tiny.state_dict(), path)
    other = build_tiny()
    aerial, sentinel, positions = inputs(2, 3)
    with torch.no_grad():
        for tensor in other.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.1)
        assert not torch.equal(other(aerial, sentinel, positions)[0], tiny(aerial, sentinel, positions)[0])
        other.load_state_dict(torch.load(path, weights_only=True), strict=True)
        expected = tiny(aerial, sentinel, positions)
        got = other(aerial, sentinel, positions)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)


def test_encoder_without_resnet_stages_adapts_fusion() -> None:
    model = build_tiny(encoder="mit_b0")
    channels = list(model.arch_vhr.encoder.out_channels)
    assert 0 in channels
    assert list(model.fm_utae_featmap_cropped.conv_list.keys()) == [str(i) for i, c in enumerate(channels) if c]
    aerial, sentinel, positions = inputs(1, 2)
    with torch.no_grad():
        aerial_logits, sat_logits = model(aerial, sentinel, positions)
    assert aerial_logits.shape == sat_logits.shape == (1, N_CLASSES, AERIAL, AERIAL)


def test_satellite_head_equals_upsample_then_convolution(tiny: UTT) -> None:
    crop = torch.randn(2, 16, 3, 3)
    conv = tiny.reshape_utae_output._modules["1"]
    with torch.no_grad():
        official_order = conv(nn.Upsample(size=(AERIAL, AERIAL), mode="nearest")(crop))
        ours = tiny.reshape_utae_output(crop, (AERIAL, AERIAL))
    torch.testing.assert_close(ours, official_order, atol=1e-6, rtol=1e-6)


def test_footprint_and_crop() -> None:
    assert satellite_footprint((512, 512), (40, 40)) == (10, 10)
    assert satellite_footprint((64, 64), (16, 16)) == (1, 1)
    assert satellite_footprint((1024, 512), (16, 40)) == (16, 10)
    x = torch.arange(2 * 40 * 40, dtype=torch.float32).view(2, 1, 40, 40)
    for size in [(10, 10), (2, 2), (4, 6), (16, 8)]:  # even leftovers: as torchvision, as IGN's code
        assert torch.equal(centre_crop(x, size), CenterCrop(size)(x))


@pytest.mark.parametrize(("sat", "size", "top"), [(16, 3, 7), (16, 1, 8), (40, 9, 16), (40, 10, 15), (8, 8, 0)])
def test_crop_window_contains_the_centroid_pixel_and_leans_toward_it(sat, size, top) -> None:
    x = torch.arange(sat, dtype=torch.float32).view(1, sat, 1).expand(1, sat, sat)
    rows = centre_crop(x, (size, size))[0, :, 0].tolist()
    assert rows == list(range(top, top + size))
    assert sat // 2 in rows


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="sat_patch_size"):
        build_utt_model(make_config(data={"sentinel": {"sat_patch_size": 8}}), pretrained_encoder=False)
    bad = {**TINY_UTAE, "decoder_widths": [16, 16, 32, 16]}
    with pytest.raises(ConfigError, match=r"model\.utae"):
        build_utt_model(make_config(model={"utae": bad}), pretrained_encoder=False)
