"""Confusion matrices accumulated over batches of predictions, on numpy arrays or torch tensors.

Rows are the ground truth, columns the prediction, as in IGN's FLAIR code (after IGNF/FLAIR-1
``metrics.py``, which sums one sklearn confusion matrix per test patch). Counting is done with a single
``bincount`` of ``truth * n + prediction`` on the arrays' own device, so GPU batches never leave the GPU
until the small ``(n, n)`` result is copied back.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from flairkit.errors import DataError
from flairkit.nomenclature import INVALID_TARGET


def _torch_tensor_type() -> type | None:
    # torch is only looked up when already imported: a tensor cannot exist otherwise, and evaluating
    # prediction files should not pay for importing torch.
    torch = sys.modules.get("torch")
    return None if torch is None else torch.Tensor


def _out_of_range(kind: str, low: int, high: int, n_classes: int, ignore_index: int) -> DataError:
    allowed = f"0..{n_classes - 1}" + (f" or {ignore_index} (ignored)" if kind == "targets" else "")
    return DataError(
        f"{kind} hold values in {low}..{high} but only {allowed} are allowed with {n_classes} classes; "
        f"check that the model, the predictions and the masks use the same nomenclature"
    )


def _count_numpy(predictions: np.ndarray, targets: np.ndarray, n_classes: int, ignore_index: int) -> np.ndarray:
    truth = np.asarray(targets).reshape(-1)
    pred = np.asarray(predictions).reshape(-1)
    keep = truth != ignore_index
    if not keep.all():
        truth, pred = truth[keep], pred[keep]
    if truth.size == 0:
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    for kind, values in (("targets", truth), ("predictions", pred)):
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= n_classes:
            raise _out_of_range(kind, low, high, n_classes, ignore_index)
    # int64 before multiplying: uint8 inputs would overflow.
    index = truth.astype(np.int64) * n_classes + pred.astype(np.int64)
    return np.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes).astype(np.int64)


def _count_torch(predictions: Any, targets: Any, n_classes: int, ignore_index: int) -> np.ndarray:
    import torch

    device = predictions.device if isinstance(predictions, torch.Tensor) else targets.device
    truth = torch.as_tensor(targets, device=device).reshape(-1)
    pred = torch.as_tensor(predictions, device=device).reshape(-1)
    keep = truth != ignore_index
    truth, pred = truth[keep].long(), pred[keep].long()
    if truth.numel() == 0:
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    for kind, values in (("targets", truth), ("predictions", pred)):
        extremes = torch.stack([values.min(), values.max()]).cpu()
        low, high = int(extremes[0]), int(extremes[1])
        if low < 0 or high >= n_classes:
            raise _out_of_range(kind, low, high, n_classes, ignore_index)
    counts = torch.bincount(truth * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).cpu().numpy().astype(np.int64)


def _count(predictions: Any, targets: Any, n_classes: int, ignore_index: int) -> np.ndarray:
    if tuple(np.shape(predictions)) != tuple(np.shape(targets)):
        raise DataError(
            f"predictions of shape {tuple(np.shape(predictions))} and targets of shape "
            f"{tuple(np.shape(targets))} differ; compare a prediction with the mask of the same patch"
        )
    tensor = _torch_tensor_type()
    if tensor is not None and (isinstance(predictions, tensor) or isinstance(targets, tensor)):
        return _count_torch(predictions, targets, n_classes, ignore_index)
    return _count_numpy(predictions, targets, n_classes, ignore_index)


class ConfusionAccumulator:
    """A running int64 confusion matrix: rows = truth, columns = prediction.

    ``update`` accepts numpy arrays or torch tensors (CPU or GPU) of any identical shape; pixels whose
    target equals ``ignore_index`` are skipped. Any other value outside ``0..n_classes-1`` is a DataError.
    """

    def __init__(self, n_classes: int, ignore_index: int = INVALID_TARGET) -> None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        self._matrix = np.zeros((n_classes, n_classes), dtype=np.int64)

    def update(self, predictions: Any, targets: Any) -> None:
        """Count one batch of predicted and true class indices."""
        self._matrix += _count(predictions, targets, self.n_classes, self.ignore_index)

    def merge(self, other_matrix: np.ndarray | ConfusionAccumulator) -> None:
        """Add another confusion matrix (or accumulator) of the same size, e.g. from another worker."""
        other = other_matrix.matrix if isinstance(other_matrix, ConfusionAccumulator) else np.asarray(other_matrix)
        if other.shape != self._matrix.shape:
            raise DataError(
                f"cannot merge a confusion matrix of shape {other.shape} into one of shape {self._matrix.shape}; "
                f"both must count the same {self.n_classes} classes"
            )
        if np.issubdtype(other.dtype, np.floating) and not np.array_equal(other, np.round(other)):
            raise DataError("a confusion matrix holds pixel counts; got non-integer values")
        self._matrix += other.astype(np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the counts so far, int64 of shape (n_classes, n_classes)."""
        return self._matrix.copy()

    def reset(self) -> None:
        """Forget every count."""
        self._matrix[:] = 0


def confusion_matrix(predictions: Any, targets: Any, n_classes: int, ignore_index: int = INVALID_TARGET) -> np.ndarray:
    """The int64 confusion matrix (rows = truth, columns = prediction) of one pair of arrays or tensors."""
    accumulator = ConfusionAccumulator(n_classes, ignore_index)
    accumulator.update(predictions, targets)
    return accumulator.matrix


def collapse_confusion(confmat: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """The int64 matrix over coarser classes, fine class ``i`` counting as ``parents[i]`` in truth and prediction
    (coarse classes ``0..max(parents)``)."""
    matrix = np.asarray(confmat)
    parents = np.asarray(parents, dtype=np.int64)
    if parents.ndim != 1 or matrix.shape != (parents.size, parents.size):
        raise DataError(
            f"confusion matrix of shape {matrix.shape} cannot be collapsed by a mapping of {parents.size} classes; "
            "collapse the matrix of the level the mapping starts from"
        )
    if parents.size and parents.min() < 0:
        raise DataError("a class mapping holds negative coarse classes; coarse classes are 0-based indices")
    n_coarse = int(parents.max()) + 1 if parents.size else 0
    membership = np.zeros((parents.size, n_coarse), dtype=np.int64)
    membership[np.arange(parents.size), parents] = 1
    return membership.T @ matrix.astype(np.int64) @ membership
