"""U-TAE and L-TAE: official layout and sizes, positional encoding, padding handling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flairkit.models.factory import count_parameters
from flairkit.models.utae import UTAE, LTAE2d, PositionalEncoder, masked_group_norm

SAT = 16
TINY = {"encoder_widths": [16, 16, 32, 32], "decoder_widths": [16, 16, 32, 32], "n_head": 4, "d_model": 32}


def randomise_batchnorm(model: nn.Module) -> None:
    """Give BatchNorm layers non-trivial running statistics, as a trained model has."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


def series(batch: int, dates: int, size: int = SAT, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, dates, 10, size, size, generator=generator) + 0.01
    positions = torch.randint(-120, 240, (batch, dates), generator=generator).float()
    return x, positions


def pad_batch(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (T, C, H, W) series and (T,) dates to the longest, as the FLAIR #2 collate does."""
    longest = max(x.shape[0] for x, _ in samples)
    xs = [torch.cat([x, x.new_zeros(longest - x.shape[0], *x.shape[1:])]) for x, _ in samples]
    ds = [torch.cat([d, d.new_zeros(longest - d.shape[0])]) for _, d in samples]
    return torch.stack(xs), torch.stack(ds)


@pytest.fixture(scope="module")
def flair2_utae() -> UTAE:
    torch.manual_seed(0)
    model = UTAE(return_maps=True)
    randomise_batchnorm(model)
    return model.eval()


def test_official_parameter_count_and_keys(flair2_utae: UTAE) -> None:
    assert count_parameters(flair2_utae) == 2_284_199
    state = flair2_utae.state_dict()
    assert len(state) == 158
    expected_shapes = {
        "in_conv.conv.conv.0.weight": (64, 10, 3, 3),
        "in_conv.conv.conv.4.bias": (64,),
        "down_blocks.0.down.conv.0.weight": (64, 64, 4, 4),
        "down_blocks.1.conv1.conv.0.weight": (128, 64, 3, 3),
        "down_blocks.2.conv2.conv.1.weight": (128,),
        "up_blocks.0.up.0.weight": (128, 128, 4, 4),
        "up_blocks.0.up.1.running_var": (128,),
        "up_blocks.2.skip_conv.0.weight": (64, 64, 1, 1),
        "up_blocks.2.conv1.conv.0.weight": (64, 128, 3, 3),
        "temporal_encoder.inconv.weight": (256, 128, 1),
        "temporal_encoder.attention_heads.Q": (16, 4),
        "temporal_encoder.attention_heads.fc1_k.weight": (64, 256),
        "temporal_encoder.in_norm.weight": (128,),
        "temporal_encoder.out_norm.bias": (128,),
        "temporal_encoder.mlp.0.weight": (128, 256),
        "temporal_encoder.mlp.1.num_batches_tracked": (),
        "out_conv.conv.conv.0.weight": (32, 64, 3, 3),
        "out_conv.conv.conv.3.weight": (13, 32, 3, 3),
    }
    assert {key: tuple(state[key].shape) for key in expected_shapes} == expected_shapes
    assert not any("denom" in key or "positional" in key for key in state)


@pytest.mark.parametrize("size", [16, 40])
@pytest.mark.parametrize(("batch", "dates"), [(1, 1), (2, 3), (3, 6)])
def test_map_and_score_shapes(flair2_utae: UTAE, batch: int, dates: int, size: int) -> None:
    x, positions = series(batch, dates, size)
    with torch.no_grad():
        scores, maps = flair2_utae(x, positions)
    assert [tuple(m.shape) for m in maps] == [
        (batch, 128, size // 8, size // 8),
        (batch, 128, size // 4, size // 4),
        (batch, 64, size // 2, size // 2),
        (batch, 64, size, size),
    ]
    assert scores.shape == (batch, 13, size, size)
    assert torch.isfinite(scores).all()


def test_scores_only_without_return_maps() -> None:
    model = UTAE(**TINY, out_conv=[8, 5]).eval()
    x, positions = series(2, 3)
    with torch.no_grad():
        scores = model(x, positions)
    assert isinstance(scores, torch.Tensor)
    assert scores.shape == (2, 5, SAT, SAT)


@pytest.mark.parametrize("agg_mode", ["att_group", "att_mean", "mean"])
def test_padded_dates_do_not_change_a_sample(agg_mode: str) -> None:
    torch.manual_seed(0)
    model = UTAE(**TINY, agg_mode=agg_mode, return_maps=True)
    randomise_batchnorm(model)
    model.eval()
    short, long_ = series(1, 3, seed=1), series(1, 6, seed=2)
    x, positions = pad_batch([(short[0][0], short[1][0]), (long_[0][0], long_[1][0])])
    assert model.padding_mask(x).tolist() == [[False] * 3 + [True] * 3, [False] * 6]
    with torch.no_grad():
        alone_scores, alone_maps = model(*short)
        batch_scores, batch_maps = model(x, positions)
    torch.testing.assert_close(batch_scores[:1], alone_scores, atol=1e-5, rtol=0)
    for in_batch, alone in zip(batch_maps, alone_maps, strict=True):
        torch.testing.assert_close(in_batch[:1], alone, atol=1e-5, rtol=0)


def test_official_pad_norm_reproduces_padding_dependence() -> None:
    torch.manual_seed(0)
    model = UTAE(**TINY, return_maps=True, official_pad_norm=True).eval()
    x, positions = series(1, 3)
    padded = torch.cat([x, torch.zeros_like(x)], dim=1), torch.cat([positions, torch.zeros_like(positions)], dim=1)
    with torch.no_grad():
        alone = model.feature_maps(x, positions)[-1]
        with_padding = model.feature_maps(*padded)[-1]
        model.temporal_encoder.official_pad_norm = False
        masked = model.feature_maps(*padded)[-1]
    assert (alone - with_padding).abs().max() > 1e-3
    torch.testing.assert_close(masked, alone, atol=1e-5, rtol=0)


def test_padding_is_read_from_frames_not_dates() -> None:
    model = UTAE(**TINY)
    x, _ = series(1, 3)
    x[0, 1] = 0.0
    x[0, 2] = 0.0
    x[0, 2, 4, 7, 7] = 1.0
    assert model.padding_mask(x).tolist() == [[False, True, False]]


def test_masked_group_norm_matches_group_norm_on_valid_dates() -> None:
    torch.manual_seed(0)
    norm = nn.GroupNorm(4, 8)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(3, 8, 6)
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] + [False] * 5])
    with torch.no_grad():
        out = masked_group_norm(x, valid, norm)
        for n, length in enumerate(valid.sum(dim=1).tolist()):
            expected = norm(x[n : n + 1, :, :length])
            torch.testing.assert_close(out[n : n + 1, :, :length], expected, atol=1e-5, rtol=1e-5)


def test_positional_encoding_values() -> None:
    encoder = PositionalEncoder(8, period=1000.0, repeat=3)
    positions = torch.tensor([[0.0, 45.0, -30.0]])
    table = encoder(positions)
    assert table.shape == (1, 3, 24)
    torch.testing.assert_close(table[0, 0, :8], torch.tensor([0.0, 1.0] * 4))
    for i in range(8):
        angle = 45.0 / 1000.0 ** (2 * (i // 2) / 8)
        expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
        assert table[0, 1, i].item() == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(table[..., 8:16], table[..., :8])
    torch.testing.assert_close(table[..., 16:], table[..., :8])


def test_ltae_attention_ignores_padded_dates() -> None:
    torch.manual_seed(0)
    ltae = LTAE2d(in_channels=16, n_head=4, d_k=4, mlp=[32, 16], d_model=32).eval()
    x = torch.randn(1, 5, 16, 2, 2)
    x[0, 3:] = 0.0
    pad_mask = torch.tensor([[False, False, False, True, True]])
    with torch.no_grad():
        out, attention = ltae(x, batch_positions=torch.arange(5.0)[None] * 10, pad_mask=pad_mask)
    assert out.shape == (1, 16, 2, 2)
    assert attention.shape == (4, 1, 5, 2, 2)
    assert torch.all(attention[:, :, 3:] == 0)
    torch.testing.assert_close(attention.sum(dim=2), torch.ones(4, 1, 2, 2))


def test_training_step_reaches_every_parameter_but_out_conv() -> None:
    torch.manual_seed(0)
    model = UTAE(**TINY, return_maps=True).train()
    short, long_ = series(1, 2, seed=1), series(1, 4, seed=2)
    x, positions = pad_batch([(short[0][0], short[1][0]), (long_[0][0], long_[1][0])])
    _, maps = model(x, positions)
    maps[-1].square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None and not n.startswith("out_conv.")]
    assert missing == []


def test_invalid_inputs_and_settings() -> None:
    model = UTAE(**TINY)
    x, positions = series(1, 2)
    with pytest.raises(ValueError, match="B, T, C, H, W"):
        model(x[0], positions)
    with pytest.raises(ValueError, match="dates"):
        model(x, positions[:, :1])
    with pytest.raises(ValueError, match="multiple of 8"):
        model(x[..., :12, :12], positions)
    with pytest.raises(ValueError, match="same last"):
        UTAE(encoder_widths=[64, 64, 128, 128], decoder_widths=[64, 64, 128, 64])
    with pytest.raises(ValueError, match="divisible by n_head"):
        UTAE(encoder_widths=[24, 32], decoder_widths=[24, 32], n_head=16)
