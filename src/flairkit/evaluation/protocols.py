"""Segmentation metrics from a confusion matrix, under the protocols of IGN's published figures.

The protocol decides the number, so each one is reproduced as published:

``flair1``
    After IGNF/FLAIR-1 ``metrics.py`` (also FLAIR-INC; FLAIR-HUB: ``flairhub``): rows AND columns of disabled
    (weight-0) targets are deleted, then per class, in %: IoU = d/(row+col-d), precision = d/col,
    recall = d/row, F = 2PR/(P+R), every undefined ratio set to 0. Averages are plain means over the
    kept classes, so a class absent from the test set (snow) counts as 0. OA = trace/sum of the cleaned
    matrix.
``model-card``
    As ``flair1``, but classes absent from the ground truth (an empty row in the full matrix) are left
    out of the averages, as in the FLAIR-INC model cards ("the snow class is discarded from the average
    metrics"); OA is unchanged.
``flair2``
    After IGNF/FLAIR-2 ``metrics.py``: the matrix is not cleaned; the IoU of each scored class (the
    enabled ones: the first 12 of the 13 FLAIR #2 targets) is taken on the full matrix and mIoU is their
    nanmean, so only classes absent from both truth and predictions (IoU 0/0) are left out. IGN's code
    computes no other figure; flairkit extends the same rule: precision, recall and F per scored class
    on the full matrix, averaged by nanmean (undefined values left out), and OA = correct pixels of the
    scored classes / pixels whose truth is a scored class.
``flairhub``
    After IGNF/FLAIR-HUB ``writer/metrics_utils.py`` and ``metrics_core.py`` (read at 3d5693b): the computation
    of ``flair1``, on the classes whose ``value_weights`` default is not 0 (per-modality weights play no part).
    For COSIA (the ``hub`` nomenclature) that drops clear cut, ligneous, mixed and undefined; for LPIS
    (``lpis1``..``lpis3``, :func:`~flairkit.nomenclature.lpis_nomenclature`) IGN's configuration drops nothing,
    so background and absent crop types count in every average. Two differences from ``flair1``: OA is NaN
    (IGN's 0/0) when no pixel falls in the kept classes, and IGN's ``metrics.json`` names the F-score average
    ``F-score`` where flairkit keeps one name, ``Fscore``, for every protocol. An LPIS run reports each level
    at or above the trained one (:func:`lpis_level_metrics`): IGN reads each level from its own label band;
    flairkit collapses the trained level's matrix through :data:`~flairkit.nomenclature.LPIS_PARENTS`.

All values are in %, including FLAIR #2's mIoU, which IGN prints as a fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from flairkit.errors import ConfigError, DataError
from flairkit.evaluation.confusion import collapse_confusion
from flairkit.nomenclature import LPIS_NOMENCLATURE_PREFIX, Nomenclature, lpis_nomenclature, lpis_parents

PROTOCOLS = ("flair1", "model-card", "flair2", "flairhub")
AVG_METRIC_NAMES = ("mIoU", "Overall Accuracy", "Fscore", "Precision", "Recall")
"""The order of ``Avg_metrics`` in IGN's ``metrics.json``."""


class ClassRow(NamedTuple):
    """The metrics (in %) of one kept class."""

    name: str
    iou: float
    fscore: float
    precision: float
    recall: float
    support: int
    """Ground-truth pixels."""
    in_average: bool


@dataclass(eq=False)
class Metrics:
    """Per-class and averaged metrics (in %) of one confusion matrix under one protocol."""

    protocol: str
    class_names: list[str]
    """Names of the kept (scored) classes, in target order."""
    per_class_iou: list[float]
    per_class_fscore: list[float]
    per_class_precision: list[float]
    per_class_recall: list[float]
    miou: float
    overall_accuracy: float
    fscore: float
    precision: float
    recall: float
    confmat: np.ndarray
    """The full, uncleaned int64 matrix over every target (rows = truth, columns = prediction)."""
    kept: list[int]
    """Target indices of the kept classes."""
    present: list[bool]
    """Per kept class: whether it occurs in the ground truth."""
    in_average: list[bool] = field(default_factory=list)
    """Per kept class: whether its IoU entered the mIoU."""
    nomenclature: str = ""
    colours: list[str] = field(default_factory=list)
    """Per kept class: its '#rrggbb' colour."""

    @property
    def averages(self) -> list[float]:
        """The averaged metrics in the order of :data:`AVG_METRIC_NAMES`."""
        return [self.miou, self.overall_accuracy, self.fscore, self.precision, self.recall]

    def class_rows(self) -> list[ClassRow]:
        """One row per kept class, in target order."""
        columns = zip(
            self.class_names,
            self.per_class_iou,
            self.per_class_fscore,
            self.per_class_precision,
            self.per_class_recall,
            self.support,
            self.in_average,
            strict=True,
        )
        return [ClassRow(*column) for column in columns]

    @property
    def kept_confmat(self) -> np.ndarray:
        """The matrix over the kept classes only (those of ``class_names``), as the figures show it."""
        return self.confmat[np.ix_(self.kept, self.kept)]

    @property
    def support(self) -> list[int]:
        """Per kept class: ground-truth pixels (its full row of the uncleaned matrix)."""
        rows = self.confmat.sum(axis=1)
        return [int(rows[i]) for i in self.kept]

    def to_official_json(self) -> dict[str, Any]:
        """The content of IGN's ``metrics.json``: same keys, values in %, undefined values as null."""
        return {
            "Avg_metrics_name": list(AVG_METRIC_NAMES),
            "Avg_metrics": [_json_float(v) for v in self.averages],
            "classes": list(self.class_names),
            "per_class_iou": [_json_float(v) for v in self.per_class_iou],
            "per_class_fscore": [_json_float(v) for v in self.per_class_fscore],
            "per_class_precision": [_json_float(v) for v in self.per_class_precision],
            "per_class_recall": [_json_float(v) for v in self.per_class_recall],
        }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _is_hub_nomenclature(nomenclature: Nomenclature) -> bool:
    """Whether a nomenclature is one of FLAIR-HUB's built-in tasks: ``hub`` (COSIA) or ``lpis1``..``lpis3``."""
    hub_names = {"hub", *(f"{LPIS_NOMENCLATURE_PREFIX}{level}" for level in (1, 2, 3))}
    return nomenclature.source is None and nomenclature.name in hub_names


def resolve_protocol(protocol: str, nomenclature: Nomenclature) -> str:
    """The protocol to apply: ``auto`` is ``flairhub`` for FLAIR-HUB's nomenclatures (``hub``, ``lpis1..3``),
    ``flair2`` for first-n nomenclatures (13 logits), else ``flair1``."""
    if protocol == "auto":
        if _is_hub_nomenclature(nomenclature):
            return "flairhub"
        return "flair2" if nomenclature.average_over == "first_n" else "flair1"
    if protocol not in PROTOCOLS:
        raise ConfigError(f"evaluate.protocol {protocol!r} is unknown; choose auto or one of {', '.join(PROTOCOLS)}")
    return protocol


def _percent(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """100 * numerator / denominator, NaN where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * numerator / np.where(denominator == 0, np.nan, denominator)


def _fscore(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """2PR/(P+R): NaN where P or R is undefined, 0 where both are 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        total = precision + recall
        return np.where(total == 0, 0.0, 2 * precision * recall / np.where(total == 0, 1.0, total))


def _mean(values: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean of the non-NaN values selected by ``mask``; NaN when none is left."""
    selected = values if mask is None else values[mask]
    selected = selected[~np.isnan(selected)]
    return float(selected.mean()) if selected.size else math.nan


def _per_class(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    diag = np.diag(matrix).astype(np.float64)
    rows = matrix.sum(axis=1).astype(np.float64)
    cols = matrix.sum(axis=0).astype(np.float64)
    iou = _percent(diag, rows + cols - diag)
    precision = _percent(diag, cols)
    recall = _percent(diag, rows)
    return iou, _fscore(precision, recall), precision, recall


def compute_metrics(confmat: np.ndarray, nomenclature: Nomenclature, protocol: str = "auto") -> Metrics:
    """Metrics of a full confusion matrix (rows = truth, over every target) under a protocol of PROTOCOLS."""
    protocol = resolve_protocol(protocol, nomenclature)
    confmat = np.asarray(confmat)
    n = nomenclature.n_targets
    if confmat.shape != (n, n):
        raise DataError(
            f"confusion matrix of shape {confmat.shape} does not match nomenclature {nomenclature.name!r} "
            f"({n} targets); compute metrics with the nomenclature the predictions were made with"
        )
    if (confmat < 0).any():
        raise DataError("confusion matrix holds negative counts; it is corrupt, recompute it")
    if confmat.sum() == 0:
        raise DataError(
            "confusion matrix is empty: no labelled pixel was counted; check that the masks hold FLAIR codes "
            f"of nomenclature {nomenclature.name!r} and that predictions exist"
        )
    confmat = confmat.astype(np.int64)
    kept = list(nomenclature.enabled)
    truth_pixels = confmat.sum(axis=1)
    present = truth_pixels[kept] > 0

    if protocol == "flair2":
        iou, fscore, precision, recall = (values[kept] for values in _per_class(confmat))
        in_average = ~np.isnan(iou)
        averaged = [_mean(iou), _mean(fscore), _mean(precision), _mean(recall)]
        scored_truth = truth_pixels[kept].sum()
        overall = 100.0 * np.diag(confmat)[kept].sum() / scored_truth if scored_truth else math.nan
    else:
        cleaned = confmat[np.ix_(kept, kept)]
        iou, fscore, precision, recall = (np.nan_to_num(v, nan=0.0) for v in _per_class(cleaned))
        in_average = present if protocol == "model-card" else np.ones(len(kept), dtype=bool)
        averaged = [_mean(values, in_average) for values in (iou, fscore, precision, recall)]
        total = cleaned.sum()
        empty_overall = math.nan if protocol == "flairhub" else 0.0
        overall = 100.0 * np.trace(cleaned) / total if total else empty_overall

    targets = [nomenclature.targets[i] for i in kept]
    return Metrics(
        protocol=protocol,
        class_names=[t.name for t in targets],
        per_class_iou=[float(v) for v in iou],
        per_class_fscore=[float(v) for v in fscore],
        per_class_precision=[float(v) for v in precision],
        per_class_recall=[float(v) for v in recall],
        miou=averaged[0],
        overall_accuracy=float(overall),
        fscore=averaged[1],
        precision=averaged[2],
        recall=averaged[3],
        confmat=confmat,
        kept=kept,
        present=[bool(p) for p in present],
        in_average=[bool(a) for a in in_average],
        nomenclature=nomenclature.name,
        colours=[t.colour for t in targets],
    )


def lpis_level_metrics(confmat: np.ndarray, level: int, protocol: str = "auto") -> dict[int, Metrics]:
    """Metrics of an LPIS run trained at ``level``, at that level and at every coarser one (level -> Metrics,
    finest first): the matrix (rows = truth) is collapsed through :func:`~flairkit.nomenclature.lpis_parents`."""
    matrix = np.asarray(confmat)
    return {
        coarse: compute_metrics(
            collapse_confusion(matrix, lpis_parents(level, coarse)), lpis_nomenclature(coarse), protocol
        )
        for coarse in range(level, 0, -1)
    }
