"""Class weights of the losses: FLAIR's 0/1 weights, the satellite branch, and optional balancing."""

import numpy as np
import torch

from flairkit.nomenclature import get_nomenclature
from flairkit.training.losses import aerial_class_weights, balanced_class_weights, satellite_class_weights


def test_disabled_classes_weigh_zero_and_the_satellite_branch_ignores_plowed_land():
    nom = get_nomenclature("13cl")
    aerial, satellite = aerial_class_weights(nom), satellite_class_weights(nom)
    assert aerial.tolist() == [1.0] * 12 + [0.0]
    plowed = nom.names.index("plowed land")
    assert satellite[plowed] == 0 and satellite.sum() == 11


def test_balancing_favours_rare_classes_and_keeps_disabled_ones_at_zero():
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0])
    counts = np.array([100, 400, 1600, 50])
    balanced = balanced_class_weights(weights, counts)
    assert balanced[3] == 0
    assert balanced[0] > balanced[1] > balanced[2]
    torch.testing.assert_close(balanced[0] / balanced[1], torch.tensor(2.0))
    torch.testing.assert_close(balanced[:3].mean(), torch.tensor(1.0))


def test_balancing_leaves_absent_classes_at_their_weight_before_rescaling():
    balanced = balanced_class_weights(torch.ones(3), np.array([0, 100, 100]))
    assert balanced[1] == balanced[2]
    assert balanced[0] == balanced[1]
