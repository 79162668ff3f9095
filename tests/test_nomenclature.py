"""The class table and every nomenclature's mapping from mask values to targets."""

import numpy as np
import pytest

from flairkit.nomenclature import FLAIR_CLASSES, HUB_ORDER, INVALID_TARGET, NOMENCLATURES, class_code, get_nomenclature

ALL_CODES = np.arange(1, 20, dtype=np.uint8)


def test_nineteen_classes_with_distinct_codes_and_colours():
    assert [c.code for c in FLAIR_CLASSES] == list(range(1, 20))
    assert len({c.colour for c in FLAIR_CLASSES}) == 19
    assert FLAIR_CLASSES[0].rgb == (0xDB, 0x0E, 0x9A)


def test_15cl_maps_value_minus_one_and_disables_four_classes():
    nom = get_nomenclature("15cl")
    assert nom.n_targets == 19
    assert nom.map_mask(ALL_CODES).tolist() == list(range(19))
    disabled_names = {nom.targets[i].name for i in nom.disabled}
    assert disabled_names == {"clear cut", "mixed", "ligneous", "other"}
    assert len(nom.enabled) == 15


def test_13cl_folds_values_above_13_into_other():
    nom = get_nomenclature("13cl")
    mapped = nom.map_mask(ALL_CODES)
    assert mapped[:12].tolist() == list(range(12))
    assert set(mapped[12:].tolist()) == {12}
    assert nom.disabled == [12]
    assert nom.average_over == "first_n"


def test_hub_order_is_a_permutation_with_building_first_and_undefined_last():
    nom = get_nomenclature("hub")
    assert sorted(HUB_ORDER) == list(range(1, 20))
    mapped = nom.map_mask(ALL_CODES)
    assert mapped[class_code("building") - 1] == 0
    assert mapped[class_code("greenhouse") - 1] == 1
    assert mapped[class_code("other") - 1] == 18
    assert nom.targets[18].name == "undefined"
    assert {nom.targets[i].name for i in nom.disabled} == {"clear cut", "ligneous", "mixed", "undefined"}


@pytest.mark.parametrize("name", sorted(NOMENCLATURES))
def test_values_outside_the_classes_are_invalid_and_0_is_unlabelled(name):
    nom = get_nomenclature(name)
    mask = np.array([0, 1, 19, 20, 255], dtype=np.uint8)
    assert nom.map_mask(mask)[[0, 3, 4]].tolist() == [INVALID_TARGET] * 3
    assert nom.ignore_value == 0
    assert nom.invalid_values(mask).tolist() == [20, 255]


@pytest.mark.parametrize("name", sorted(NOMENCLATURES))
def test_targets_round_trip_to_codes_for_enabled_targets(name):
    nom = get_nomenclature(name)
    enabled = np.array(nom.enabled)
    codes = nom.map_targets(enabled)
    assert nom.map_mask(codes).tolist() == enabled.tolist()


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(KeyError, match="15cl"):
        get_nomenclature("14cl")
    with pytest.raises(KeyError, match="water"):
        class_code("lava")


def test_values_beyond_uint8_never_wrap_into_classes():
    nom = get_nomenclature("15cl")
    mask = np.array([1, 257, 300, -1, 19], dtype=np.int32)
    assert nom.map_mask(mask).tolist() == [0, INVALID_TARGET, INVALID_TARGET, INVALID_TARGET, 18]
    assert nom.invalid_values(mask).tolist() == [-1, 257, 300]
