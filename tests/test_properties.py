"""Property-based checks (hypothesis) of the metrics, the nomenclatures, the tiling arithmetic and the config parser."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import BaseModel

from flairkit.config import load_config, parse_override
from flairkit.config.loading import deep_merge
from flairkit.config.schema import FlairConfig
from flairkit.detection.tiling import TilePlan, blend_tiles_1d, fitted_tile_size, margin_tiles_1d
from flairkit.errors import ConfigError
from flairkit.evaluation.confusion import ConfusionAccumulator
from flairkit.evaluation.protocols import PROTOCOLS, compute_metrics
from flairkit.nomenclature import INVALID_TARGET, MAX_CODE, MIN_CODE, NOMENCLATURES, get_nomenclature

FAST = settings(max_examples=60, deadline=None)
NAMES = sorted(NOMENCLATURES)


# ------------------------------------------------------------------------------------------------ metrics


@st.composite
def nomenclature_and_matrix(draw, names=NAMES, high: int = 1000):
    nomenclature = get_nomenclature(draw(st.sampled_from(names)))
    n = nomenclature.n_targets
    matrix = draw(hnp.arrays(np.int64, (n, n), elements=st.integers(0, high)))
    enabled = nomenclature.enabled
    if matrix[np.ix_(enabled, enabled)].sum() == 0:
        matrix[enabled[0], enabled[0]] = 1  # metrics of a matrix without a scored pixel are refused
    return nomenclature, matrix


def _per_class(metrics) -> dict[str, np.ndarray]:
    return {
        name: np.array(getattr(metrics, f"per_class_{name}"), dtype=np.float64)
        for name in ("iou", "fscore", "precision", "recall")
    }


@FAST
@given(nomenclature_and_matrix(), st.sampled_from(PROTOCOLS))
def test_metrics_are_percentages_and_iou_is_below_precision_and_recall(case, protocol):
    nomenclature, matrix = case
    metrics = compute_metrics(matrix, nomenclature, protocol)
    values = _per_class(metrics)
    for name, per_class in values.items():
        defined = per_class[~np.isnan(per_class)]
        assert ((defined >= 0) & (defined <= 100 + 1e-9)).all(), name
    for average in metrics.averages:
        assert math.isnan(average) or 0 <= average <= 100 + 1e-9
    iou, precision, recall = values["iou"], values["precision"], values["recall"]
    both = ~np.isnan(iou) & ~np.isnan(precision) & ~np.isnan(recall)
    assert (iou[both] <= np.minimum(precision[both], recall[both]) + 1e-9).all()
    if protocol != "flair2":
        assert not any(math.isnan(v) for v in metrics.averages)


@st.composite
def matrix_and_enabled_permutation(draw):
    nomenclature, matrix = draw(nomenclature_and_matrix())
    enabled = nomenclature.enabled
    shuffled = draw(st.permutations(enabled))
    permutation = np.arange(nomenclature.n_targets)
    permutation[enabled] = shuffled  # disabled targets stay where they are
    return nomenclature, matrix, permutation


@FAST
@given(matrix_and_enabled_permutation(), st.sampled_from(PROTOCOLS))
def test_permuting_classes_permutes_the_per_class_metrics(case, protocol):
    nomenclature, matrix, permutation = case
    original = compute_metrics(matrix, nomenclature, protocol)
    permuted = compute_metrics(matrix[np.ix_(permutation, permutation)], nomenclature, protocol)
    # kept position k of the permuted matrix holds target permutation[kept[k]] of the original
    position = {target: k for k, target in enumerate(original.kept)}
    source = [position[permutation[target]] for target in permuted.kept]
    for name, values in _per_class(original).items():
        np.testing.assert_allclose(_per_class(permuted)[name], values[source], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(permuted.averages, original.averages, rtol=1e-9, atol=1e-9)


@FAST
@given(nomenclature_and_matrix(names=["15cl", "12cl", "hub"]), st.data())
def test_flair1_protocol_ignores_disabled_rows_and_columns(case, data):
    nomenclature, matrix = case
    disabled = nomenclature.disabled
    noisy = matrix.copy()
    extra = data.draw(hnp.arrays(np.int64, noisy.shape, elements=st.integers(0, 500)))
    noisy[disabled, :] += extra[disabled, :]
    noisy[:, disabled] += extra[:, disabled]
    clean, changed = compute_metrics(matrix, nomenclature, "flair1"), compute_metrics(noisy, nomenclature, "flair1")
    assert changed.averages == clean.averages
    for name, values in _per_class(clean).items():
        assert np.array_equal(_per_class(changed)[name], values), name


@st.composite
def labelled_pixels(draw):
    n_classes = draw(st.integers(1, 20))
    size = draw(st.integers(0, 400))
    truth = draw(hnp.arrays(np.int64, size, elements=st.sampled_from([*range(n_classes), INVALID_TARGET])))
    predictions = draw(hnp.arrays(np.int64, size, elements=st.integers(0, n_classes - 1)))
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=6)))
    as_torch = draw(st.booleans())
    return n_classes, truth, predictions, cuts, as_torch


@FAST
@given(labelled_pixels())
def test_confusion_accumulated_over_chunks_equals_one_shot_and_a_plain_count(case):
    n_classes, truth, predictions, cuts, as_torch = case
    convert = torch.from_numpy if as_torch else np.asarray
    chunked = ConfusionAccumulator(n_classes)
    for start, stop in zip([0, *cuts], [*cuts, len(truth)], strict=True):
        chunked.update(convert(predictions[start:stop]), convert(truth[start:stop]))
    one_shot = ConfusionAccumulator(n_classes)
    one_shot.update(convert(predictions), convert(truth))
    expected = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, p in zip(truth, predictions, strict=True):
        if t != INVALID_TARGET:
            expected[t, p] += 1
    assert np.array_equal(chunked.matrix, one_shot.matrix)
    assert np.array_equal(one_shot.matrix, expected)


# ------------------------------------------------------------------------------------------- nomenclatures


@FAST
@given(st.sampled_from(NAMES), hnp.arrays(np.uint8, st.integers(1, 64), elements=st.integers(0, 255)))
def test_every_code_maps_into_range_and_every_other_value_to_255(name, mask):
    nomenclature = get_nomenclature(name)
    targets = nomenclature.map_mask(mask)
    valid = (mask >= MIN_CODE) & (mask <= MAX_CODE)
    assert ((targets[valid] >= 0) & (targets[valid] < nomenclature.n_targets)).all()
    assert (targets[~valid] == INVALID_TARGET).all()
    unlabelled = mask == nomenclature.ignore_value
    assert set(nomenclature.invalid_values(mask).tolist()) == set(mask[~valid & ~unlabelled].tolist())


@FAST
@given(st.sampled_from(NAMES), st.data())
def test_codes_of_enabled_targets_map_back_to_the_same_targets(name, data):
    nomenclature = get_nomenclature(name)
    targets = data.draw(hnp.arrays(np.int64, st.integers(1, 64), elements=st.sampled_from(nomenclature.enabled)))
    codes = nomenclature.map_targets(targets)
    assert ((codes >= MIN_CODE) & (codes <= MAX_CODE)).all()
    assert np.array_equal(nomenclature.map_mask(codes), targets)


# -------------------------------------------------------------------------------------------------- tiling


@st.composite
def tile_geometry(draw, max_length: int = 300):
    tile_size = draw(st.integers(4, 96))
    margin = draw(st.integers(0, (tile_size - 1) // 2))
    return draw(st.integers(1, max_length)), tile_size, margin


def _owners(length: int, spans: list[tuple[int, int]]) -> np.ndarray:
    """Index of the last span painting each pixel (-1: unpainted)."""
    owner = np.full(length, -1)
    for index, (start, stop) in enumerate(spans):
        owner[start:stop] = index
    return owner


@FAST
@given(tile_geometry())
def test_margin_mode_gives_every_pixel_exactly_one_kept_centre(geometry):
    length, tile_size, margin = geometry
    tiles = margin_tiles_1d(length, tile_size, margin)
    step = tile_size - 2 * margin
    for tile in tiles:
        # the kept window is inside the tile's centre and inside the raster
        assert tile.origin + margin <= tile.keep.start < tile.keep.stop <= tile.origin + tile_size - margin
        assert tile.keep.start >= 0 and tile.keep.stop <= length
        if length + 2 * margin >= tile_size:
            assert -margin <= tile.origin and tile.origin + tile_size <= length + margin  # inside the padded raster
    spans = [(t.keep.start, t.keep.stop) for t in tiles]
    owner = _owners(length, spans)
    assert (owner >= 0).all()
    coverage = np.zeros(length, dtype=int)
    for start, stop in spans:
        coverage[start:stop] += 1
    # kept centres only overlap where the last tile was snapped back inside the raster; it is painted last
    overlap = coverage > 1
    assert coverage.max() <= 2
    assert not overlap.any() or (length % step and (owner[overlap] == len(tiles) - 1).all())
    assert (coverage == 1).all() or length % step


@FAST
@given(tile_geometry())
def test_blend_mode_tiles_cover_the_raster_inside_the_padded_raster(geometry):
    length, tile_size, margin = geometry
    tiles = blend_tiles_1d(length, tile_size, margin)
    assert (_owners(length, [(t.keep.start, t.keep.stop) for t in tiles]) >= 0).all()
    for tile in tiles:
        assert tile.keep.start == max(tile.origin, 0) and tile.keep.stop == min(tile.origin + tile_size, length)
        if length + 2 * margin > tile_size:
            assert -margin <= tile.origin and tile.origin + tile_size <= length + margin


@FAST
@given(st.integers(1, 6000), st.integers(1, 6000), st.integers(2, 80), st.integers(0, 200))
def test_fitted_tiles_are_smaller_multiples_of_32_and_never_need_more_tiles(width, height, tile_units, margin):
    tile_size = 32 * tile_units
    assume(2 * margin < tile_size)
    fitted = fitted_tile_size(width, height, tile_size, margin)
    assert 2 * margin < fitted <= tile_size
    assert fitted % 32 == 0
    for mode in ("margin", "blend"):
        plan = TilePlan(width, height, tile_size, margin, mode, block_size=tile_size - 2 * margin)
        fitted_plan = TilePlan(width, height, fitted, margin, mode, block_size=fitted - 2 * margin)
        assert fitted_plan.n_tiles <= plan.n_tiles


def _paint(tiles, rows: slice, cols: slice) -> np.ndarray:
    """Which tile (an id from its painting order) provides each pixel of ``rows`` x ``cols``; -1 for none."""
    canvas = np.full((rows.stop - rows.start, cols.stop - cols.start), -1)
    for tile in tiles:
        r0, r1 = max(tile.keep_rows.start, rows.start), min(tile.keep_rows.stop, rows.stop)
        c0, c1 = max(tile.keep_cols.start, cols.start), min(tile.keep_cols.stop, cols.stop)
        if r0 < r1 and c0 < c1:
            canvas[r0 - rows.start : r1 - rows.start, c0 - cols.start : c1 - cols.start] = (
                tile.order[0] * 1000 + tile.order[1]
            )
    return canvas


@FAST
@given(tile_geometry(max_length=160), st.integers(1, 160), st.sampled_from(["margin", "blend"]), st.integers(8, 96))
def test_blocks_partition_the_map_and_are_painted_as_the_whole_map(geometry, height, mode, block_size):
    width, tile_size, margin = geometry
    step = tile_size - 2 * margin
    plan = TilePlan(width, height, tile_size, margin, mode, block_size=max(1, block_size // step) * step)
    blocks_of = np.zeros((height, width), dtype=int)
    for block in plan.blocks:
        blocks_of[block.rows.start : block.rows.stop, block.cols.start : block.cols.stop] += 1
    assert (blocks_of == 1).all()
    if mode != "margin":
        return
    whole = _paint(plan.all_tiles(), slice(0, height), slice(0, width))
    assert (whole != -1).all()
    for block in plan.blocks:
        rows, cols = slice(block.rows.start, block.rows.stop), slice(block.cols.start, block.cols.stop)
        assert np.array_equal(_paint(plan.tiles_for(block), rows, cols), whole[rows, cols])


# ------------------------------------------------------------------------------------------- config parser

IDENTIFIER = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False)
    | st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
)


def _lookup(nested: dict[str, Any], parts: list[str]) -> Any:
    for part in parts:
        assert isinstance(nested, dict) and list(nested) == [part]
        nested = nested[part]
    return nested


@FAST
@given(st.lists(IDENTIFIER, min_size=1, max_size=4), SCALARS)
def test_parse_override_round_trips_dotted_keys_and_yaml_scalars(parts, value):
    text = f"{'.'.join(parts)}={yaml.safe_dump(value, default_flow_style=True)}"
    assert _lookup(parse_override(text), parts) == value


def _leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _nest(leaves: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in leaves:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


TREES = st.recursive(
    st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=3),
    lambda children: st.dictionaries(IDENTIFIER, children, min_size=1, max_size=3),
    max_leaves=12,
).filter(lambda tree: isinstance(tree, dict))


@FAST
@given(TREES, st.data())
def test_deep_merge_is_associative_on_disjoint_keys(tree, data):
    leaves = list(_leaves(tree))
    owners = data.draw(st.lists(st.integers(0, 2), min_size=len(leaves), max_size=len(leaves)))
    a, b, c = (_nest([leaf for leaf, owner in zip(leaves, owners, strict=True) if owner == i]) for i in range(3))
    before = copy.deepcopy((a, b, c))
    left = deep_merge(deep_merge(a, b), c)
    right = deep_merge(a, deep_merge(b, c))
    assert left == right == _nest(leaves)
    assert (a, b, c) == before  # inputs are not modified


def _sections(model: type[BaseModel] = FlairConfig, prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    yield prefix, model
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _sections(annotation, f"{prefix}{name}.")


SECTIONS = dict(_sections())


@FAST
@given(st.sampled_from(sorted(SECTIONS)), IDENTIFIER, SCALARS)
def test_unknown_keys_always_raise_a_config_error_naming_the_key(section, key, value):
    if key in SECTIONS[section].model_fields:
        key = f"{key}_unknown"
    dotted = f"{section}{key}"
    with pytest.raises(ConfigError) as raised:
        load_config(None, [f"{dotted}={yaml.safe_dump(value, default_flow_style=True)}"])
    assert f"{dotted}: unknown key" in str(raised.value)
