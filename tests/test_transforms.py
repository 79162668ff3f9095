"""Normalisation modes and the geometric augmentation applied on the device."""

import pytest
import torch

from flairkit.config.schema import FLAIR_MEANS, FLAIR_STDS, NormalizationConfig
from flairkit.data.transforms import Normalizer, augment_batch


def test_custom_normalisation_centres_and_scales_each_band():
    config = NormalizationConfig(mode="custom", means=list(FLAIR_MEANS[:3]), stds=list(FLAIR_STDS[:3]))
    batch = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    out = Normalizer.from_config(config)(batch)
    expected = (batch.float() - torch.tensor(FLAIR_MEANS[:3]).view(1, 3, 1, 1)) / torch.tensor(FLAIR_STDS[:3]).view(
        1, 3, 1, 1
    )
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_scaling_maps_uint8_to_unit_interval_and_without_keeps_values():
    batch = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    torch.testing.assert_close(Normalizer("scaling")(batch), batch.float() / 255)
    torch.testing.assert_close(Normalizer("without")(batch), batch.float())


def test_unknown_mode_and_missing_statistics_are_refused():
    with pytest.raises(ValueError, match="unknown normalisation mode"):
        Normalizer("zscore")
    with pytest.raises(ValueError, match="one mean and one std"):
        Normalizer("custom", [1.0], None)


def test_augmentation_keeps_image_and_label_aligned():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(16 * 16).view(1, 16, 16).repeat(8, 1, 1)
    images = labels.unsqueeze(1).repeat(1, 3, 1, 1).float()
    out_images, out_labels = augment_batch(images, labels, probability=0.5, generator=generator)
    for channel in range(3):
        torch.testing.assert_close(out_images[:, channel], out_labels.float())
    changed = [not torch.equal(out_labels[i], labels[i]) for i in range(8)]
    assert any(changed) and not all(changed)


def test_augmentation_probability_zero_is_the_identity():
    images, labels = torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)
    out_images, out_labels = augment_batch(images, labels, probability=0.0)
    assert out_images is images and out_labels is labels
