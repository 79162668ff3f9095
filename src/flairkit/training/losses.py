"""Class-weighted cross entropy as FLAIR trains it: weight 0 for disabled classes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

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
