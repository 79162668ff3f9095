"""Small and look-alike classes: train.loss combinations (Dice, focal, Lovasz-softmax beside weighted cross
entropy) and class-aware patch sampling (data.class_aware_sampling)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss

from conftest import tiny_config
from flairkit.config.schema import LossConfig
from flairkit.data.datamodule import FlairDataModule, class_aware_patch_weights, patch_class_pixels
from flairkit.data.datasets import EpochShuffleSampler
from flairkit.nomenclature import INVALID_TARGET
from flairkit.training.losses import SegmentationLoss, focal_loss

WEIGHTS = torch.tensor([1.0, 2.0, 0.5, 0.0])


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn((2, 4, 6, 6), generator=generator)
    target = torch.randint(0, 3, (2, 6, 6), generator=generator)
    target[0, :2] = INVALID_TARGET
    return logits, target


def test_default_is_flair_weighted_cross_entropy():
    logits, target = _data()
    loss = SegmentationLoss(WEIGHTS, LossConfig())
    expected = F.cross_entropy(logits, target, weight=WEIGHTS, ignore_index=INVALID_TARGET)
    assert torch.equal(loss(logits, target), expected)
    assert list(loss.state_dict()) == ["weight"]


def test_each_term_equals_its_reference_and_ignores_the_ignore_index():
    logits, target = _data(1)
    dice = SegmentationLoss(WEIGHTS, LossConfig(ce=0, dice=1))(logits, target)
    reference = DiceLoss("multiclass", ignore_index=INVALID_TARGET, class_weights=WEIGHTS.tolist())(logits, target)
    torch.testing.assert_close(dice, reference)
    lovasz = SegmentationLoss(WEIGHTS, LossConfig(ce=0, lovasz=1))(logits, target)
    torch.testing.assert_close(lovasz, LovaszLoss("multiclass", ignore_index=INVALID_TARGET)(logits, target))
    # Ignored pixels change no term, whatever their logits.
    moved = logits.clone()
    moved[0, :, :2] = 50.0 * torch.randn_like(moved[0, :, :2])
    for config in (LossConfig(ce=0, dice=1), LossConfig(ce=0, lovasz=1), LossConfig(ce=0, focal=1)):
        loss = SegmentationLoss(WEIGHTS, config)
        torch.testing.assert_close(loss(moved, target), loss(logits, target))


def test_focal_loss_matches_its_formula_and_is_cross_entropy_at_gamma_zero():
    logits, target = _data(2)
    ce = F.cross_entropy(logits, target, weight=WEIGHTS, ignore_index=INVALID_TARGET)
    torch.testing.assert_close(focal_loss(logits, target, WEIGHTS, 0.0), ce)
    valid = target != INVALID_TARGET
    probabilities = logits.softmax(dim=1).permute(0, 2, 3, 1)[valid]
    classes = target[valid]
    p_t = probabilities[torch.arange(len(classes)), classes]
    w = WEIGHTS[classes]
    expected = (-w * (1 - p_t) ** 2 * p_t.log()).sum() / w.sum()
    torch.testing.assert_close(focal_loss(logits, target, WEIGHTS, 2.0), expected)
    assert focal_loss(logits, target, WEIGHTS, 2.0) < ce


def test_terms_combine_with_their_coefficients():
    logits, target = _data(3)
    config = LossConfig(ce=1.0, dice=0.5, focal=0.25, focal_gamma=1.0, lovasz=2.0)
    parts = {
        "ce": LossConfig(ce=1),
        "dice": LossConfig(ce=0, dice=1),
        "focal": LossConfig(ce=0, focal=1, focal_gamma=1.0),
        "lovasz": LossConfig(ce=0, lovasz=1),
    }
    values = {name: SegmentationLoss(WEIGHTS, part)(logits, target) for name, part in parts.items()}
    expected = values["ce"] + 0.5 * values["dice"] + 0.25 * values["focal"] + 2.0 * values["lovasz"]
    torch.testing.assert_close(SegmentationLoss(WEIGHTS, config)(logits, target), expected)


def test_a_loss_without_terms_is_refused():
    with pytest.raises(ValueError, match=r"train\.loss has no term"):
        LossConfig(ce=0)


def test_class_aware_weights_favour_patches_of_rare_classes():
    # 10 patches of 100 pixels: class 0 everywhere, class 1 in patch 0 only, class 2 (weight 0) in patch 1.
    per_patch = np.zeros((10, 3), dtype=np.int64)
    per_patch[:, 0] = 100
    per_patch[0] = [90, 10, 0]
    per_patch[1] = [50, 0, 50]
    weights = class_aware_patch_weights(per_patch, [1.0, 1.0, 0.0], power=1.0)
    total = per_patch[:, :2].sum()
    np.testing.assert_allclose(weights[0], total / 10)
    np.testing.assert_allclose(weights[1:], total / per_patch[:, 0].sum())  # the disabled class does not count
    assert np.all(class_aware_patch_weights(per_patch, [1.0, 1.0, 0.0], power=0.0) == 1.0)


def test_weighted_sampler_draws_rare_patches_more_often_and_keeps_equal_rank_lengths():
    weights = [10.0] + [1.0] * 9
    draws = []
    for epoch in range(200):
        sampler = EpochShuffleSampler(10, 3, weights=weights)
        sampler.set_epoch(epoch)
        draws += list(sampler)
    share = draws.count(0) / len(draws)
    assert 0.45 < share < 0.6  # 10 / 19 against 1 / 10 with a plain shuffle
    for length, world in ((10, 3), (7, 4), (2, 3)):
        ranks = [list(EpochShuffleSampler(length, 3, rank, world, weights=[1.0] * length)) for rank in range(world)]
        assert len({len(r) for r in ranks}) == 1
        single = list(EpochShuffleSampler(length, 3, weights=[1.0] * length))
        padded = [single[p % length] for p in range(len(ranks[0]) * world)]
        assert sorted(i for r in ranks for i in r) == sorted(padded)
    with pytest.raises(ValueError, match="sampling weights"):
        EpochShuffleSampler(3, 0, weights=[1.0, 0.0])


def test_datamodule_samples_train_patches_by_class_rarity(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path, "data.class_aware_sampling=1.0")
    datamodule = FlairDataModule(config)
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    per_patch = patch_class_pixels(dataset)
    assert per_patch.shape == (len(dataset), dataset.nomenclature.n_targets)
    sampler = datamodule.train_dataloader().sampler
    expected = class_aware_patch_weights(per_patch, dataset.nomenclature.weights, 1.0)
    np.testing.assert_allclose(sampler.weights.numpy(), expected)
    assert datamodule.val_dataloader().sampler.weights is None


def test_loss_balancing_and_class_aware_sampling_read_the_train_masks_once(tiny_world, tmp_path, monkeypatch):
    from flairkit.data import datamodule as datamodule_module
    from flairkit.training.run import _class_weights

    config = tiny_config(tiny_world, tmp_path, "data.class_aware_sampling=1.0", "train.class_balancing=sqrt_inverse")
    calls = []
    counted = datamodule_module.patch_class_pixels
    monkeypatch.setattr(datamodule_module, "patch_class_pixels", lambda dataset: calls.append(1) or counted(dataset))
    datamodule = FlairDataModule(config)
    assert _class_weights(config, datamodule) is not None
    assert datamodule.train_dataloader().sampler.weights is not None
    assert len(calls) == 1
