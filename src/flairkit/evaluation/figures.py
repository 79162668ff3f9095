"""Figures of metrics: normalised confusion matrices, per-class IoU bars, grouped bars of several runs.

Each ``*_figure`` function returns a matplotlib Figure (shown as is in a notebook); each ``plot_*`` function
saves that figure as a PNG, atomically. Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no
display, no global state).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flairkit.atomic import write_bytes_atomic

if TYPE_CHECKING:
    from flairkit.evaluation.protocols import Metrics

DPI = 120


def figure_png(figure: Figure) -> bytes:
    """The PNG bytes of a figure (what the saved figures hold)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _save(figure: Figure, path: Path, overwrite: bool) -> Path:
    return write_bytes_atomic(path, figure_png(figure), overwrite=overwrite)


def normalize_confusion(confmat: np.ndarray, normalize: Literal["precision", "recall"]) -> np.ndarray:
    """Column-normalised (precision on the diagonal) or row-normalised (recall) matrix in %; 0 for empty lines."""
    if normalize not in ("precision", "recall"):
        raise ValueError(f"normalize must be 'precision' or 'recall', got {normalize!r}")
    matrix = np.asarray(confmat, dtype=np.float64)
    totals = matrix.sum(axis=0, keepdims=True) if normalize == "precision" else matrix.sum(axis=1, keepdims=True)
    return 100.0 * np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def plot_confusion(
    confmat: np.ndarray,
    names: Sequence[str],
    normalize: Literal["precision", "recall"],
    path: Path,
    overwrite: bool = False,
) -> Path:
    """Save :func:`confusion_figure` as a PNG."""
    return _save(confusion_figure(confmat, names, normalize), path, overwrite)


def confusion_figure(confmat: np.ndarray, names: Sequence[str], normalize: Literal["precision", "recall"]) -> Figure:
    """A normalised confusion matrix (rows = truth) annotated with percentages."""
    matrix = normalize_confusion(confmat, normalize)
    n = matrix.shape[0]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names given for a {n}x{n} confusion matrix")
    side = max(4.0, 0.55 * n + 2.5)
    figure = Figure(figsize=(side + 1.0, side))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=100)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="%")
    axes.set_xticks(range(n), labels=list(names), rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(n), labels=list(names), fontsize=8)
    axes.set_xlabel("prediction")
    axes.set_ylabel("truth")
    sums = "columns" if normalize == "precision" else "rows"
    axes.set_title(f"Normalised confusion matrix ({normalize}: {sums} sum to 100%)", fontsize=10)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                if value >= 0.05:
                    colour = "white" if value > 50 else "black"
                    axes.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=6, color=colour)
    return figure


def plot_iou_bars(metrics: Metrics, path: Path, overwrite: bool = False) -> Path:
    """Save :func:`iou_figure` as a PNG."""
    return _save(iou_figure(metrics), path, overwrite)


def iou_figure(metrics: Metrics) -> Figure:
    """Per-class IoU as horizontal bars in the class colours, with the mIoU as a line."""
    names = metrics.class_names
    values = np.nan_to_num(np.asarray(metrics.per_class_iou, dtype=np.float64), nan=0.0)
    colours = metrics.colours if len(metrics.colours) == len(names) else ["#4c72b0"] * len(names)
    figure = Figure(figsize=(7.0, max(3.0, 0.35 * len(names) + 1.5)))
    axes = figure.add_subplot()
    positions = np.arange(len(names))
    axes.barh(positions, values, color=colours, edgecolor="black", linewidth=0.5)
    labels = [name if used else f"{name} (not averaged)" for name, used in zip(names, _averaged(metrics), strict=True)]
    axes.set_yticks(positions, labels=labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("IoU (%)")
    if not np.isnan(metrics.miou):
        axes.axvline(metrics.miou, color="black", linestyle="--", linewidth=1, label=f"mIoU {metrics.miou:.2f}")
        axes.legend(loc="lower right", fontsize=8)
    for position, value in zip(positions, values, strict=True):
        axes.text(value + 1, position, f"{value:.1f}", va="center", fontsize=7)
    axes.set_title(f"Per-class IoU ({metrics.protocol} protocol)", fontsize=10)
    return figure


def _averaged(metrics: Metrics) -> list[bool]:
    return (
        metrics.in_average if len(metrics.in_average) == len(metrics.class_names) else [True] * len(metrics.class_names)
    )


def plot_grouped_bars(
    groups: Sequence[str],
    series: dict[str, Sequence[float | None]],
    path: Path,
    ylabel: str = "IoU (%)",
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Save :func:`grouped_bars_figure` as a PNG."""
    return _save(grouped_bars_figure(groups, series, ylabel, title), path, overwrite)


def grouped_bars_figure(
    groups: Sequence[str], series: dict[str, Sequence[float | None]], ylabel: str = "IoU (%)", title: str = ""
) -> Figure:
    """A grouped bar chart: one group per label in ``groups``, one bar per series (missing values skipped)."""
    n_series = max(len(series), 1)
    width = 0.8 / n_series
    figure = Figure(figsize=(min(max(6.0, 0.2 * len(groups) * n_series + 2.5), 18.0), 4.5))
    axes = figure.add_subplot()
    positions = np.arange(len(groups))
    for k, (label, values) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        known = ~np.isnan(heights)
        offsets = positions[known] + (k - (n_series - 1) / 2) * width
        axes.bar(offsets, heights[known], width, label=label)
    axes.set_xticks(positions, labels=list(groups), rotation=60, ha="right", fontsize=8)
    axes.set_ylim(0, 100)
    axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    return figure
