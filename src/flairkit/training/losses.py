"""Training losses: class-weighted cross entropy as FLAIR trains it (weight 0 for disabled classes), and its
combinations with Dice, focal and Lovasz-softmax terms."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss
from torch import nn

from flairkit.config.schema import LossConfig
from flairkit.nomenclature import INVALID_TARGET, Nomenclature, class_code

SATELLITE_DISABLED_CLASSES = ("plowed land",)
"""Classes the satellite branch of U-T&T does not learn (FLAIR #2: plowed land is not visible at 10 m)."""


def aerial_class_weights(nomenclature: Nomenclature) -> torch.Tensor:
    """Per-target loss weights of the aerial branch (the nomenclature's weights)."""
    return torch.tensor(nomenclature.weights, dtype=torch.float32)


def satellite_class_weights(nomenclature: Nomenclature) -> torch.Tensor:
    """Per-target loss weights of the satellite branch: the aerial ones, 0 for a target that holds only FLAIR classes
    of :data:`SATELLITE_DISABLED_CLASSES` (its ``flair`` list, or the FLAIR codes of its mask values)."""
    weights = aerial_class_weights(nomenclature)
    disabled = {class_code(name) for name in SATELLITE_DISABLED_CLASSES}
    for target in nomenclature.targets:
        flair = set(target.flair)
        if not flair and nomenclature.flair_masks:
            flair = {value for value, index in nomenclature.value_to_target.items() if index == target.index}
        if flair and flair <= disabled:
            weights[target.index] = 0.0
    return weights


def balanced_class_weights(weights: torch.Tensor, pixel_counts: np.ndarray) -> torch.Tensor:
    """``weights`` scaled by sqrt(median / frequency) over the enabled classes present in ``pixel_counts``.

    Disabled classes keep weight 0; absent enabled classes keep their weight. The result is rescaled so
    that its mean over enabled classes is 1.
    """
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64)
    enabled = weights > 0
    present = enabled & (counts > 0)
    if not present.any():
        return weights.clone()
    median = counts[present].median()
    factor = torch.ones_like(counts)
    factor[present] = torch.sqrt(median / counts[present])
    balanced = weights.double() * factor
    balanced[enabled] /= balanced[enabled].mean()
    return balanced.float()


def weighted_cross_entropy(weights: torch.Tensor) -> nn.CrossEntropyLoss:
    """Cross entropy with class weights; pixels of no class (255) are ignored."""
    return nn.CrossEntropyLoss(weight=weights, ignore_index=INVALID_TARGET)


class SegmentationLoss(nn.Module):
    """Weighted sum of cross entropy, Dice, focal and Lovasz-softmax terms over the same class weights.

    The class weights are held as ``weight`` (the ``criterion.weight`` checkpoint key of FLAIR's cross entropy)
    and pixels of no class (255) are ignored by every term. Dice (smp's soft multiclass Dice) weighs each class's
    score by its weight; focal is the softmax focal loss with the cross entropy's class weights (smp's FocalLoss
    is a one-vs-rest sigmoid loss without class weights); Lovasz is smp's Lovasz-softmax over the classes present.
    Terms of coefficient 0 are not computed: the default (cross entropy only) is FLAIR's loss.
    """

    def __init__(self, weights: torch.Tensor, config: LossConfig):
        super().__init__()
        self.register_buffer("weight", weights.float())
        self.ignore_index = INVALID_TARGET
        self.coefficients = {"ce": config.ce, "dice": config.dice, "focal": config.focal, "lovasz": config.lovasz}
        self.focal_gamma = config.focal_gamma
        self.dice = DiceLoss("multiclass", ignore_index=INVALID_TARGET, class_weights=weights.tolist())
        self.lovasz = LovaszLoss("multiclass", ignore_index=INVALID_TARGET)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = {
            "ce": lambda: F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index),
            "dice": lambda: self.dice(logits, target),
            "focal": lambda: focal_loss(logits, target, self.weight, self.focal_gamma),
            "lovasz": lambda: self.lovasz(logits, target),
        }
        total = [coefficient * terms[name]() for name, coefficient in self.coefficients.items() if coefficient > 0]
        return torch.stack(total).sum() if len(total) > 1 else total[0]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, gamma: float) -> torch.Tensor:
    """Softmax focal loss ``-w_t (1 - p_t)^gamma log p_t``, averaged like weighted cross entropy (by the summed
    weights of the counted pixels); pixels of no class (255) are ignored. ``gamma`` 0 is weighted cross entropy."""
    valid = target != INVALID_TARGET
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    log_p = F.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    pixel_weights = weights[safe] * valid
    losses = -pixel_weights * (1 - log_p.exp()).pow(gamma) * log_p
    return losses.sum() / pixel_weights.sum()
