"""Radiometric jitter of training batches (data.radiometric) and per-patch standardisation."""

import math

import pytest
import torch

from conftest import tiny_config
from flairkit.config.schema import FlairConfig, RadiometricConfig
from flairkit.data.transforms import (
    Normalizer,
    RadiometricJitter,
    augment_batch,
    band_quantiles,
    gaussian_blur,
    histogram_match,
)
from flairkit.models.build import build_model
from flairkit.models.inference import prepare_inputs
from flairkit.training.module import SegmentationTask
from flairkit.training.run import train

RGBIE = [1, 2, 3, 4, 5]


def _batch(value: float = 128.0, batch: int = 64, size: int = 8) -> torch.Tensor:
    return torch.full((batch, 5, size, size), value)


def _jitter(**options) -> RadiometricJitter:
    return RadiometricJitter(RadiometricConfig(**options), RGBIE)


def test_off_by_default_leaves_training_batches_as_today():
    config = FlairConfig()
    jitter = RadiometricJitter(config.data.radiometric, config.data.channels)
    images = torch.randint(0, 256, (4, 5, 8, 8), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert not jitter.enabled
    assert jitter(images, generator) is images
    assert torch.equal(generator.get_state(), state)


def test_gain_and_offset_stay_in_their_ranges_and_spare_elevation():
    generator = torch.Generator().manual_seed(1)
    gained = _jitter(gain=0.2)(_batch(100.0), generator)
    factors = gained[:, :4, 0, 0] / 100.0
    assert factors.min() >= 0.8 - 1e-5 and factors.max() <= 1.2 + 1e-5
    assert factors.max() - factors.min() > 0.3  # spread over the range, per band and patch
    assert torch.all(gained[:, 4] == 100.0)
    shifted = _jitter(offset=0.1)(_batch(100.0), generator)
    shifts = shifted[:, :4, 0, 0] - 100.0
    assert shifts.abs().max() <= 25.5 + 1e-4 and shifts.abs().max() > 15
    assert torch.all(shifted[:, 4] == 100.0)


def test_gamma_exponents_stay_within_the_configured_bound():
    generator = torch.Generator().manual_seed(2)
    out = _jitter(gamma=0.3)(_batch(64.0), generator)
    exponents = torch.log(out[:, :4, 0, 0] / 255.0) / math.log(64.0 / 255.0)
    bound = 1 / 0.7
    assert exponents.min() >= 1 / bound - 1e-4 and exponents.max() <= bound + 1e-4
    assert exponents.max() / exponents.min() > 1.5


def test_noise_has_the_configured_std_and_blur_smooths():
    generator = torch.Generator().manual_seed(3)
    noisy = _jitter(noise_std=5.0)(_batch(128.0, size=32), generator)
    assert abs(float((noisy[:, :4] - 128.0).std()) - 5.0) < 0.1
    assert torch.all(noisy[:, 4] == 128.0)
    step = torch.zeros(2, 1, 16, 16)
    step[..., 8:] = 255.0
    blurred = gaussian_blur(step, torch.tensor([0.1, 2.0]))
    assert torch.allclose(blurred[0], step[0], atol=1e-3)  # sigma 0.1: unchanged
    assert 0 < float(blurred[1, 0, 0, 7]) < 127.5 < float(blurred[1, 0, 0, 8]) < 255
    assert torch.allclose(blurred.sum(), step.sum(), rtol=1e-4)  # the kernel keeps the mean


def test_blur_probability_chooses_patches():
    images = torch.zeros(200, 5, 8, 8)
    images[..., 4:] = 255.0
    out = _jitter(blur_probability=0.25)(images, torch.Generator().manual_seed(4))
    changed = (out != images).flatten(1).any(dim=1).float().mean()
    assert 0.15 < float(changed) < 0.35


def test_draws_are_reproducible_from_the_generator_state():
    jitter = _jitter(gain=0.1, offset=0.05, gamma=0.2, blur_probability=0.5, noise_std=2.0)
    images = torch.randint(0, 256, (6, 5, 16, 16), dtype=torch.uint8)
    first, second = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = jitter(images, first), jitter(images, second)
    assert torch.equal(a, b)
    assert not torch.equal(jitter(images, first), a)  # the generator moved on


def test_histogram_matching_maps_a_source_onto_the_reference_quantiles():
    generator = torch.Generator().manual_seed(6)
    source = torch.rand((2, 1, 64, 64), generator=generator) * 100.0  # uniform 0..100
    reference = torch.tensor([[50.0, 60.0, 80.0, 120.0, 200.0]])  # values at quantiles 0, .25, .5, .75, 1
    matched = histogram_match(source, reference)
    levels = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    for patch in matched:
        quantiles = torch.quantile(patch.flatten(), levels)
        torch.testing.assert_close(quantiles, reference[0], atol=1.0, rtol=0)
    # The mapping is monotonic: the order of pixels is kept.
    assert torch.equal(source[0].flatten().argsort(), matched[0].flatten().argsort())


def test_histogram_matching_through_the_config_spares_elevation_and_checks_band_count():
    reference = [[0.0, 255.0]] * 4 + [[0.0, 1.0]]
    config = FlairConfig.model_validate(
        {"data": {"radiometric": {"histogram_probability": 1.0, "histogram_reference": reference}}}
    )
    jitter = RadiometricJitter(config.data.radiometric, config.data.channels)
    images = torch.arange(64.0).view(1, 1, 8, 8).repeat(2, 5, 1, 1)
    out = jitter(images, torch.Generator().manual_seed(7))
    assert torch.equal(out[:, 4], images[:, 4])
    assert float(out[:, :4].min()) == 0.0 and float(out[:, :4].max()) == 255.0
    with pytest.raises(ValueError, match="one list of quantiles per selected band"):
        FlairConfig.model_validate({"data": {"radiometric": {"histogram_reference": [[0.0, 1.0]]}}})
    with pytest.raises(ValueError, match=r"needs data\.radiometric\.histogram_reference"):
        FlairConfig.model_validate({"data": {"radiometric": {"histogram_probability": 0.5}}})


def test_per_patch_standardisation_gives_zero_mean_unit_std_per_band():
    config = FlairConfig.model_validate({"data": {"normalization": {"mode": "per_patch"}}})
    normalizer = Normalizer.from_config(config.data.normalization)
    images = torch.randint(0, 256, (3, 5, 16, 16), dtype=torch.uint8)
    images[0, 2] = 7  # a constant band stays finite
    out = normalizer(images)
    std, mean = torch.std_mean(out, dim=(-2, -1))
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)
    assert torch.allclose(std[1:], torch.ones_like(std[1:]), atol=1e-4)
    assert torch.all(out[0, 2] == 0)


def test_band_quantiles_of_reference_patches_drive_histogram_matching():
    generator = torch.Generator().manual_seed(8)
    dark = (torch.rand((20, 2, 16, 16), generator=generator) * 60 + 20).to(torch.uint8)  # values 20..79
    reference = band_quantiles((patch.numpy() for patch in dark), levels=5)
    assert len(reference) == 2
    assert reference[0][0] == float(dark[:, 0].min()) and reference[0][-1] == float(dark[:, 0].max())
    assert abs(reference[0][2] - 50) <= 2
    bright = torch.rand((1, 2, 32, 32), generator=generator) * 255
    matched = histogram_match(bright, torch.tensor(reference))
    assert float(matched.min()) >= 19 and float(matched.max()) <= 80
    assert abs(float(matched.median()) - reference[0][2]) <= 2
    with pytest.raises(ValueError, match="uint8"):
        band_quantiles([dark[0].float().numpy()])


def test_training_batches_are_unchanged_by_default(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path)
    task = SegmentationTask(config, model=build_model(config, pretrained_encoder=False))
    generator = torch.Generator().manual_seed(config.train.seed)
    images = torch.randint(0, 256, (4, 5, 16, 16), dtype=torch.uint8)
    target = torch.randint(0, 5, (4, 16, 16))
    ours = task.prepare_batch({"image": images.clone(), "target": target.clone()}, training=True)
    today = prepare_inputs(
        {"image": images.clone(), "target": target.clone()},
        Normalizer.from_config(config.data.normalization),
        augment=lambda x, y: augment_batch(x, y, config.data.augmentation_probability, generator),
    )
    assert torch.equal(ours["input"], today["input"]) and torch.equal(ours["target"], today["target"])


def test_training_with_every_option_resumes_exactly(tiny_world, tmp_path):
    # As test_training's resume test: the plateau schedule does not depend on max_epochs, which the first run cuts.
    options = (
        "train.deterministic=true",
        "train.scheduler=plateau",
        "data.radiometric.gain=0.1",
        "data.radiometric.offset=0.05",
        "data.radiometric.gamma=0.2",
        "data.radiometric.blur_probability=0.5",
        "data.radiometric.noise_std=3",
        "data.radiometric.histogram_probability=0.5",
        "data.radiometric.histogram_reference=" + str([[10.0, 90.0, 200.0]] * 5),
        "data.normalization.mode=per_patch",
        "data.class_aware_sampling=0.5",
        "train.loss.dice=0.5",
        "train.loss.focal=0.5",
        "train.loss.lovasz=0.5",
    )
    straight = train(tiny_config(tiny_world, tmp_path / "a", *options), progress=False)
    first = train(tiny_config(tiny_world, tmp_path / "b", "train.max_epochs=1", *options), progress=False)
    resumed = train(
        tiny_config(tiny_world, tmp_path / "b", *options, f"train.resume_from={first.last_checkpoint}"), progress=False
    )
    assert resumed.epochs == straight.epochs == 2
    assert resumed.val_loss == pytest.approx(straight.val_loss, rel=1e-5)
    assert resumed.val_miou == pytest.approx(straight.val_miou, abs=1e-6)
