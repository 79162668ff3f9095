"""Metric protocols: hand-computed small matrices, and the figures IGN published for released models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from flairkit.errors import ConfigError, DataError
from flairkit.evaluation.confusion import collapse_confusion
from flairkit.evaluation.protocols import (
    AVG_METRIC_NAMES,
    PROTOCOLS,
    compute_metrics,
    lpis_level_metrics,
    resolve_protocol,
)
from flairkit.nomenclature import (
    LPIS_PARENTS,
    Nomenclature,
    Target,
    get_nomenclature,
    lpis_classes,
    lpis_nomenclature,
    lpis_parents,
)

# --------------------------------------------------------------------------------------------------
# Small hand-computed cases: targets A, B, C enabled, D disabled (weight 0).
# --------------------------------------------------------------------------------------------------


def tiny_nomenclature(average_over: str = "enabled") -> Nomenclature:
    targets = tuple(
        Target(i, name, "#000000", i + 1, weight)
        for i, (name, weight) in enumerate(zip("ABCD", (1, 1, 1, 0), strict=True))
    )
    return Nomenclature("tiny", "test", targets, {i + 1: i for i in range(4)}, average_over=average_over)


# rows = truth, columns = prediction; C never in the truth but predicted once; D disabled
CONFMAT = np.array(
    [
        [8, 1, 0, 1],
        [2, 5, 1, 0],
        [0, 0, 0, 0],
        [1, 1, 1, 3],
    ],
    dtype=np.int64,
)


def test_flair1_deletes_disabled_rows_and_columns_and_counts_absent_classes_as_zero():
    m = compute_metrics(CONFMAT, tiny_nomenclature(), "flair1")
    # cleaned matrix [[8,1,0],[2,5,1],[0,0,0]]: rows 9, 8, 0; columns 10, 6, 1
    iou = [100 * 8 / 11, 100 * 5 / 9, 0.0]
    precision = [100 * 8 / 10, 100 * 5 / 6, 0.0]
    recall = [100 * 8 / 9, 100 * 5 / 8, 0.0]  # C: 0/0 -> 0
    fscore = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall, strict=True)]
    assert m.class_names == ["A", "B", "C"]
    assert m.kept == [0, 1, 2]
    assert m.present == [True, True, False]
    assert m.in_average == [True, True, True]
    np.testing.assert_allclose(m.per_class_iou, iou)
    np.testing.assert_allclose(m.per_class_precision, precision)
    np.testing.assert_allclose(m.per_class_recall, recall)
    np.testing.assert_allclose(m.per_class_fscore, fscore)
    assert m.miou == pytest.approx(np.mean(iou))
    assert m.precision == pytest.approx(np.mean(precision))
    assert m.recall == pytest.approx(np.mean(recall))
    assert m.fscore == pytest.approx(np.mean(fscore))
    assert m.overall_accuracy == pytest.approx(100 * 13 / 17)
    np.testing.assert_array_equal(m.confmat, CONFMAT)  # the full matrix is kept as given


def test_model_card_leaves_classes_absent_from_the_truth_out_of_the_averages():
    m = compute_metrics(CONFMAT, tiny_nomenclature(), "model-card")
    assert m.in_average == [True, True, False]
    assert m.per_class_iou[2] == 0.0
    assert m.miou == pytest.approx((100 * 8 / 11 + 100 * 5 / 9) / 2)
    assert m.precision == pytest.approx((80 + 100 * 5 / 6) / 2)
    assert m.recall == pytest.approx((100 * 8 / 9 + 62.5) / 2)
    assert m.overall_accuracy == pytest.approx(100 * 13 / 17)


def test_flair2_scores_the_uncleaned_matrix_and_counts_a_predicted_absent_class_as_zero():
    m = compute_metrics(CONFMAT, tiny_nomenclature("first_n"), "flair2")
    # full matrix: rows 10, 8, 0, 6; columns 11, 7, 2, 4
    iou = [100 * 8 / 13, 100 * 5 / 10, 0.0]  # C: 0 / (0 + 2 - 0) is defined, hence averaged
    precision = [100 * 8 / 11, 100 * 5 / 7, 0.0]
    recall = [100 * 8 / 10, 100 * 5 / 8]
    fscore = [2 * p * r / (p + r) for p, r in zip(precision, recall, strict=False)]
    np.testing.assert_allclose(m.per_class_iou, iou)
    assert m.in_average == [True, True, True]
    assert m.miou == pytest.approx(np.mean(iou))
    assert m.precision == pytest.approx(np.mean(precision))
    assert np.isnan(m.per_class_recall[2]) and np.isnan(m.per_class_fscore[2])
    assert m.recall == pytest.approx(np.mean(recall))
    assert m.fscore == pytest.approx(np.mean(fscore))
    assert m.overall_accuracy == pytest.approx(100 * 13 / 18)  # pixels whose truth is A, B or C


def test_flair2_leaves_out_classes_absent_from_truth_and_predictions():
    confmat = CONFMAT.copy()
    confmat[1, 2], confmat[3, 2] = 0, 0  # C now appears nowhere
    confmat[1, 1] += 1
    m = compute_metrics(confmat, tiny_nomenclature("first_n"), "flair2")
    assert np.isnan(m.per_class_iou[2])
    assert m.in_average == [True, True, False]
    assert m.miou == pytest.approx((100 * 8 / 13 + 100 * 6 / 10) / 2)  # B: row 8, column 8
    assert json.dumps(m.to_official_json(), allow_nan=False)  # NaN is written as null
    assert m.to_official_json()["per_class_iou"][2] is None


def test_fscore_is_zero_when_precision_and_recall_are_zero():
    confmat = np.array([[0, 4, 0, 0], [3, 2, 0, 0], [0, 0, 5, 0], [0, 0, 0, 0]])
    for protocol in PROTOCOLS:
        m = compute_metrics(confmat, tiny_nomenclature(), protocol)
        assert m.per_class_fscore[0] == 0.0
        assert m.per_class_iou[0] == 0.0


def test_disabled_classes_do_not_change_flair1_metrics():
    rng = np.random.default_rng(0)
    confmat = rng.integers(1, 100, size=(4, 4))
    noisy = confmat.copy()
    noisy[3, :] += 1000
    noisy[:, 3] += 1000
    a, b = (compute_metrics(c, tiny_nomenclature(), "flair1") for c in (confmat, noisy))
    assert a.averages == pytest.approx(b.averages)
    assert a.per_class_iou == pytest.approx(b.per_class_iou)


def test_resolve_protocol():
    assert resolve_protocol("auto", get_nomenclature("15cl")) == "flair1"
    assert resolve_protocol("auto", get_nomenclature("hub")) == "flairhub"
    assert [resolve_protocol("auto", lpis_nomenclature(level)) for level in (1, 2, 3)] == ["flairhub"] * 3
    assert resolve_protocol("auto", get_nomenclature("13cl")) == "flair2"
    assert resolve_protocol("model-card", get_nomenclature("13cl")) == "model-card"
    with pytest.raises(ConfigError, match="flair1"):
        resolve_protocol("miou", get_nomenclature("15cl"))


def test_flair2_on_13_classes_scores_the_first_12():
    rng = np.random.default_rng(1)
    confmat = rng.integers(0, 50, size=(13, 13))
    m = compute_metrics(confmat, get_nomenclature("13cl"))
    assert m.protocol == "flair2"
    assert m.kept == list(range(12))
    diag = np.diag(confmat)
    ious = 100 * diag / (confmat.sum(0) + confmat.sum(1) - diag)
    assert m.miou == pytest.approx(ious[:12].mean())


def test_bad_matrices_are_refused():
    with pytest.raises(DataError, match="15cl"):
        compute_metrics(np.ones((13, 13)), get_nomenclature("15cl"))
    with pytest.raises(DataError, match="empty"):
        compute_metrics(np.zeros((4, 4)), tiny_nomenclature())
    with pytest.raises(DataError, match="negative"):
        compute_metrics(-np.ones((4, 4)), tiny_nomenclature())


def test_official_json_keys_and_order():
    m = compute_metrics(CONFMAT, tiny_nomenclature(), "flair1")
    content = m.to_official_json()
    assert list(content) == [
        "Avg_metrics_name",
        "Avg_metrics",
        "classes",
        "per_class_iou",
        "per_class_fscore",
        "per_class_precision",
        "per_class_recall",
    ]
    assert content["Avg_metrics_name"] == ["mIoU", "Overall Accuracy", "Fscore", "Precision", "Recall"]
    assert content["Avg_metrics_name"] == list(AVG_METRIC_NAMES)
    assert content["Avg_metrics"] == pytest.approx([m.miou, m.overall_accuracy, m.fscore, m.precision, m.recall])
    assert content["classes"] == ["A", "B", "C"]
    assert all(isinstance(v, float) for v in content["per_class_iou"])


# --------------------------------------------------------------------------------------------------
# Published figures of IGN's FLAIR-INC model cards (15cl nomenclature, snow absent from the test set).
# --------------------------------------------------------------------------------------------------

SNOW = "snow"

# FLAIR-INC_rgbie_15cl_resnet34-unet: per-class IoU (%) and published mIoU 54.7168 (snow counted as 0)
RGBIE_IOU = {
    "building": 82.6313,
    "pervious surface": 53.2351,
    "impervious surface": 74.1742,
    "bare soil": 60.3958,
    "water": 87.5887,
    "coniferous": 46.3504,
    "deciduous": 67.4473,
    "brushwood": 30.2346,
    "vineyard": 82.9251,
    "herbaceous vegetation": 55.0283,
    "agricultural land": 52.0145,
    "plowed land": 40.8387,
    "swimming pool": 48.4433,
    "greenhouse": 39.4447,
}
RGBIE_MIOU = 54.7168

# FLAIR-INC_rgb_15cl_resnet34-deeplabv3 (model card): (IoU, precision, recall) per class, in %
DEEPLAB_CLASSES = {
    "building": (74.671, 82.639, 88.565),
    "pervious surface": (52.890, 73.606, 65.269),
    "impervious surface": (69.452, 81.036, 82.930),
    "bare soil": (59.280, 76.764, 72.243),
    "water": (82.144, 88.130, 92.363),
    "coniferous": (55.443, 75.030, 67.988),
    "deciduous": (68.459, 77.756, 85.132),
    "brushwood": (28.215, 61.283, 34.336),
    "vineyard": (77.997, 84.523, 90.994),
    "herbaceous vegetation": (50.624, 69.270, 65.287),
    "agricultural land": (58.221, 69.052, 78.777),
    "plowed land": (43.881, 60.336, 61.671),
    "swimming pool": (38.207, 59.539, 51.606),
    "greenhouse": (53.815, 57.120, 90.293),
}
DEEPLAB_AVERAGES = {"mIoU": 58.093, "Overall Accuracy": 74.887, "Fscore": 72.331, "Precision": 72.577, "Recall": 73.390}


def index_of(name: str) -> int:
    return get_nomenclature("15cl").names.index(name)


def add_disabled_noise(confmat: np.ndarray) -> None:
    """Pixels of weight-0 classes (truth or prediction): the FLAIR-1 protocol deletes them."""
    nomenclature = get_nomenclature("15cl")
    for k, disabled in enumerate(nomenclature.disabled):
        confmat[disabled, index_of("building")] += 1000 * (k + 1)
        confmat[index_of("water"), disabled] += 700 * (k + 1)
        confmat[disabled, disabled] += 300


def matrix_with_ious(ious: dict[str, float], scale: int = 10**8) -> np.ndarray:
    """19x19 matrix whose per-class IoUs are ``ious``: each class's misses are predicted as snow."""
    confmat = np.zeros((19, 19), dtype=np.int64)
    for name, iou in ious.items():
        i = index_of(name)
        confmat[i, i] = scale
        confmat[i, index_of(SNOW)] = round(scale * (100 / iou - 1))  # d / (d + misses) = iou
    add_disabled_noise(confmat)
    return confmat


def matrix_with_precision_recall(classes: dict[str, tuple[float, float, float]], oa: float) -> np.ndarray:
    """19x19 matrix with the given per-class precision and recall and overall accuracy (snow absent).

    Diagonals d_i are equal except one class, sized to give the OA; the off-diagonal pixels of each row
    (d/R - d) and column (d/P - d) are spread by iterative proportional fitting over a zero-diagonal
    matrix, the surplus of missed pixels going to the snow column.
    """
    names = list(classes)
    precision = np.array([classes[n][1] for n in names]) / 100
    recall = np.array([classes[n][2] for n in names]) / 100
    target_oa, n = oa / 100, len(names)
    free = names.index("water")
    weights = np.ones(n)
    others = (1 / recall).sum() - 1 / recall[free]
    weights[free] = (n - 1 - target_oa * others) / (target_oa / recall[free] - 1)  # sum d / sum(d/R) = OA
    missed = weights * (1 / recall - 1)
    false_alarms = weights * (1 / precision - 1)
    column_targets = np.append(false_alarms, missed.sum() - false_alarms.sum())
    assert column_targets[-1] > 0
    spread = np.ones((n, n + 1))
    spread[np.arange(n), np.arange(n)] = 0
    for _ in range(500):
        spread *= (missed / spread.sum(1))[:, None]
        spread *= (column_targets / spread.sum(0))[None, :]
    scale = 10**8
    confmat = np.zeros((19, 19), dtype=np.int64)
    index = [index_of(name) for name in names] + [index_of(SNOW)]
    for a, i in enumerate(index[:-1]):
        confmat[i, i] = round(weights[a] * scale)
        for b, j in enumerate(index):
            if a != b:
                confmat[i, j] = round(spread[a, b] * scale)
    add_disabled_noise(confmat)
    return confmat


def test_rgbie_card_miou_is_the_mean_over_15_classes_with_snow_counted_as_zero():
    nomenclature = get_nomenclature("15cl")
    confmat = matrix_with_ious(RGBIE_IOU)
    m = compute_metrics(confmat, nomenclature, "flair1")
    assert len(m.class_names) == 15 and SNOW in m.class_names
    for name, iou in RGBIE_IOU.items():
        assert m.per_class_iou[m.class_names.index(name)] == pytest.approx(iou, abs=1e-4)
    assert m.per_class_iou[m.class_names.index(SNOW)] == 0.0
    assert m.miou == pytest.approx(RGBIE_MIOU, abs=1e-3)

    card = compute_metrics(confmat, nomenclature, "model-card")
    assert card.present[card.class_names.index(SNOW)] is False
    assert card.miou == pytest.approx(RGBIE_MIOU * 15 / 14, abs=1e-3)  # 58.625, the mean of 14


def test_deeplabv3_card_averages_are_reproduced_under_the_model_card_protocol():
    confmat = matrix_with_precision_recall(DEEPLAB_CLASSES, DEEPLAB_AVERAGES["Overall Accuracy"])
    m = compute_metrics(confmat, get_nomenclature("15cl"), "model-card")
    for name, (iou, precision, recall) in DEEPLAB_CLASSES.items():
        k = m.class_names.index(name)
        assert m.per_class_precision[k] == pytest.approx(precision, abs=1e-4)
        assert m.per_class_recall[k] == pytest.approx(recall, abs=1e-4)
        assert m.per_class_iou[k] == pytest.approx(iou, abs=2e-3)  # the card rounds IoU, P and R separately
    published = dict(zip(AVG_METRIC_NAMES, m.averages, strict=True))
    assert published == pytest.approx(DEEPLAB_AVERAGES, abs=1e-3)
    # the same matrix under FLAIR-1 rules: snow counts as 0 in every average
    flair1 = compute_metrics(confmat, get_nomenclature("15cl"), "flair1")
    assert flair1.miou == pytest.approx(DEEPLAB_AVERAGES["mIoU"] * 14 / 15, abs=1e-3)
    assert flair1.overall_accuracy == pytest.approx(DEEPLAB_AVERAGES["Overall Accuracy"], abs=1e-3)


# --------------------------------------------------------------------------------------------------
# FLAIR-HUB: IGN's own metric code on random matrices (benchmarks/hub_metrics_official.py), LPIS levels.
# --------------------------------------------------------------------------------------------------

HUB_METRICS = Path(__file__).parent / "fixtures" / "hub_metrics" / "cases.json"
IGN_AVG_NAMES = ["mIoU", "Overall Accuracy", "F-score", "Precision", "Recall"]


def hub_task_nomenclature(case: dict) -> Nomenclature:
    return get_nomenclature("hub") if case["task"] == "AERIAL_LABEL-COSIA" else lpis_nomenclature(case["lpis_level"])


def test_flairhub_protocol_equals_ign_flair_hub_metric_code():
    cases = json.loads(HUB_METRICS.read_text())["cases"]
    assert {(c["task"], c["lpis_level"]) for c in cases} == {
        ("AERIAL_LABEL-COSIA", 0),
        *(("ALL_LABEL-LPIS", level) for level in (1, 2, 3)),
    }
    for case in cases:
        ign, confmat = case["ign"], np.array(case["confmat"], dtype=np.int64)
        nomenclature = hub_task_nomenclature(case)
        # the draws hold classes absent from the truth and never predicted, so undefined ratios are exercised
        assert (confmat.sum(axis=1) == 0).any() and (confmat.sum(axis=0) == 0).any()
        m = compute_metrics(confmat, nomenclature, "auto")
        assert m.protocol == "flairhub"
        assert ign["Avg_metrics_name"] == IGN_AVG_NAMES
        np.testing.assert_allclose(m.averages, ign["Avg_metrics"], rtol=0, atol=1e-9)
        for key in ("per_class_iou", "per_class_fscore", "per_class_precision", "per_class_recall"):
            np.testing.assert_allclose(getattr(m, key), ign[key], rtol=0, atol=1e-9, err_msg=key)
        if case["lpis_level"] in (0, 1):
            assert [name.replace("_", " ") for name in ign["classes"]] == m.class_names
        else:
            assert len(ign["classes"]) == len(m.class_names)
    cosia = [c for c in cases if c["task"] == "AERIAL_LABEL-COSIA"]
    disabled = get_nomenclature("hub").disabled
    assert any(np.array(c["confmat"])[:, disabled].sum() > 0 for c in cosia)  # predicted disabled classes count


def test_flairhub_overall_accuracy_is_undefined_without_a_kept_pixel():
    hub = get_nomenclature("hub")
    confmat = np.zeros((hub.n_targets, hub.n_targets), dtype=np.int64)
    confmat[hub.disabled[0], hub.disabled[0]] = 7
    assert math.isnan(compute_metrics(confmat, hub, "flairhub").overall_accuracy)  # IGN: 0 / 0
    assert compute_metrics(confmat, hub, "flair1").overall_accuracy == 0.0
    assert compute_metrics(confmat, hub, "flairhub").miou == 0.0


def test_collapse_confusion_sums_the_blocks_of_each_coarse_pair():
    fine = np.arange(16, dtype=np.int64).reshape(4, 4)
    # fine 0, 2 -> coarse 1; fine 1, 3 -> coarse 0
    collapsed = collapse_confusion(fine, np.array([1, 0, 1, 0]))
    expected = np.array(
        [
            [5 + 7 + 13 + 15, 4 + 6 + 12 + 14],
            [1 + 3 + 9 + 11, 0 + 2 + 8 + 10],
        ]
    )
    np.testing.assert_array_equal(collapsed, expected)
    assert collapsed.dtype == np.int64
    np.testing.assert_array_equal(collapse_confusion(fine, np.arange(4)), fine)
    with pytest.raises(DataError, match="shape"):
        collapse_confusion(fine, np.array([0, 0, 1]))


def test_lpis_parents_follow_the_names_and_compose():
    for level, parents in LPIS_PARENTS.items():
        fine, coarse = lpis_classes(level), lpis_classes(level - 1)
        assert len(parents) == len(fine) and sorted(set(parents)) == list(range(len(coarse)))
        assert list(parents) == sorted(parents)  # each finer list keeps a coarse class's children together
        for name, parent in zip(fine, parents, strict=True):
            if name in coarse:
                assert coarse[parent] == name
    np.testing.assert_array_equal(lpis_parents(3, 1), np.asarray(LPIS_PARENTS[2])[np.asarray(LPIS_PARENTS[3])])
    np.testing.assert_array_equal(lpis_parents(2, 2), np.arange(31))
    l3, l2 = lpis_classes(3), lpis_classes(2)
    assert l2[lpis_parents(3, 2)[l3.index("winter durum wheat")]] == "other winter cereals"
    with pytest.raises(ValueError, match="finer"):
        lpis_parents(1, 2)


def test_lpis_run_reports_its_level_and_every_coarser_one():
    l3 = lpis_classes(3)
    n = len(l3)
    confmat = np.zeros((n, n), dtype=np.int64)
    winter, spring = l3.index("winter wheat"), l3.index("spring wheat")
    background = l3.index("background")
    confmat[winter, spring] = 30  # wrong at level 3, right once both are "wheat"
    confmat[spring, spring] = 10
    confmat[background, background] = 60
    by_level = lpis_level_metrics(confmat, 3)
    assert list(by_level) == [3, 2, 1]
    assert [m.nomenclature for m in by_level.values()] == ["lpis3", "lpis2", "lpis1"]
    assert all(m.protocol == "flairhub" for m in by_level.values())
    assert [len(m.class_names) for m in by_level.values()] == [46, 31, 23]
    level3, level1 = by_level[3], by_level[1]
    assert level3.per_class_iou[winter] == 0.0 and level3.per_class_iou[spring] == 25.0
    assert level1.per_class_iou[lpis_classes(1).index("wheat")] == 100.0
    assert level3.overall_accuracy == 70.0 and level1.overall_accuracy == 100.0
    # every class counts in the mean (absent ones as 0), background included, as in IGN's LPIS config
    assert level1.miou == pytest.approx(200 / 23)
    assert all(m.confmat.sum() == 100 for m in by_level.values())
    assert list(lpis_level_metrics(confmat[:23, :23], 1)) == [1]
