"""Class-weighted cross entropy as FLAIR trains it: weight 0 for disabled classes."""

from __future__ import annotations

import torch
from torch import nn

from flairkit.nomenclature import INVALID_TARGET, Nomenclature, class_code

SATELLITE_DISABLED_CLASSES = ("plowed land",)
"""Classes the satellite branch of U-T&T does not learn (FLAIR #2: plowed land is not visible at 10 m)."""


def aerial_class_weights(nomenclature: Nomenclature) -> torch.Tensor:
    """Per-target loss weights of the aerial branch (the nomenclature's weights)."""
    return torch.tensor(nomenclature.weights, dtype=torch.float32)


def satellite_class_weights(nomenclature: Nomenclature) -> torch.Tensor:
    """Per-target loss weights of the satellite branch: the aerial ones with plowed land set to 0."""
    weights = aerial_class_weights(nomenclature)
    codes = {class_code(name) for name in SATELLITE_DISABLED_CLASSES}
    for target in nomenclature.targets:
        if target.code in codes:
            weights[target.index] = 0.0
    return weights


def weighted_cross_entropy(weights: torch.Tensor) -> nn.CrossEntropyLoss:
    """Cross entropy with class weights; pixels of no class (255) are ignored."""
    return nn.CrossEntropyLoss(weight=weights, ignore_index=INVALID_TARGET)
