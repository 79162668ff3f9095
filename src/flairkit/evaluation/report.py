"""Writing and reading evaluation results.

``write_metrics`` fills ``<run>/metrics/`` with the files IGN's FLAIR-1 code writes (``confmat.npy``, the
full uncleaned matrix, and ``metrics.json`` with the official keys) plus ``per_class.csv``, ``report.md``
and PNG figures. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from flairkit.atomic import atomic_path, write_text_atomic
from flairkit.errors import DataError, OutputExistsError
from flairkit.evaluation.figures import plot_confusion, plot_iou_bars
from flairkit.evaluation.protocols import AVG_METRIC_NAMES, Metrics
from flairkit.models.inference import TTA_TRANSFORMS, forward_passes

METRICS_DIR = "metrics"
FILES = {
    "confmat": "confmat.npy",
    "metrics": "metrics.json",
    "per_class": "per_class.csv",
    "report": "report.md",
}
FIGURES = {
    "confusion_precision": "confmat_precision.png",
    "confusion_recall": "confmat_recall.png",
    "iou": "iou_per_class.png",
}
CSV_COLUMNS = ("class", "iou", "fscore", "precision", "recall", "support_pixels")
REQUIRED_KEYS = ("Avg_metrics_name", "Avg_metrics", "classes", "per_class_iou")


def format_value(value: float | None, digits: int = 2) -> str:
    """A metric in % for tables: ``digits`` decimals, a dash when unknown."""
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def inference_settings(tta: str, models: int) -> dict[str, Any]:
    """How predictions were made: ``evaluate.tta``, the networks averaged (an ensemble) and the forward passes per
    patch they cost (the ``inference`` entry of ``metrics.json``)."""
    return {
        "tta": tta,
        "models": models,
        "forward_passes": len(TTA_TRANSFORMS[tta]) * models,
        "summary": forward_passes(tta, models),
    }


def metrics_json(metrics: Metrics, inference: dict[str, Any] | None = None) -> dict[str, Any]:
    """The official ``metrics.json`` content plus ``protocol`` and ``nomenclature`` keys, and ``inference`` (see
    :func:`inference_settings`) when the predictions were made here."""
    content = {**metrics.to_official_json(), "protocol": metrics.protocol, "nomenclature": metrics.nomenclature}
    return content if inference is None else {**content, "inference": inference}


def _per_class_csv(metrics: Metrics) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in metrics.class_rows():
        values = (row.iou, row.fscore, row.precision, row.recall)
        writer.writerow([row.name, *("" if math.isnan(v) else f"{v:.6f}" for v in values), row.support])
    return buffer.getvalue()


def not_averaged(metrics: Metrics) -> list[str]:
    """Names of the classes the protocol leaves out of the averages."""
    return [row.name for row in metrics.class_rows() if not row.in_average]


def _report_md(metrics: Metrics, figure_names: list[str]) -> str:
    lines = [
        "# Evaluation",
        "",
        f"Protocol: `{metrics.protocol}`, nomenclature: `{metrics.nomenclature}`, "
        f"{int(metrics.confmat.sum()):,} labelled pixels.",
        "",
        "| " + " | ".join(AVG_METRIC_NAMES) + " |",
        "|" + "---:|" * len(AVG_METRIC_NAMES),
        "| " + " | ".join(format_value(v) for v in metrics.averages) + " |",
        "",
        "| class | IoU | F-score | Precision | Recall | support (px) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, iou, fscore, precision, recall, support, used in metrics.class_rows():
        label = name if used else f"{name} \\*"
        cells = [
            label,
            format_value(iou),
            format_value(fscore),
            format_value(precision),
            format_value(recall),
            f"{support:,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    excluded = not_averaged(metrics)
    if excluded:
        lines += ["", f"\\* left out of the averages by the `{metrics.protocol}` protocol: {', '.join(excluded)}."]
    if figure_names:
        lines += ["", *(f"![{name}]({name})" for name in figure_names)]
    return "\n".join(lines) + "\n"


def write_metrics(
    metrics: Metrics,
    out_dir: Path,
    overwrite: bool = False,
    figures: bool = True,
    inference: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``out_dir/metrics/`` (confmat.npy, metrics.json, per_class.csv, report.md, PNGs); return the paths.
    ``inference``: how the predictions were made (:func:`inference_settings`), recorded in metrics.json.

    Refuses, before writing anything, when one of these files exists and ``overwrite`` is off.
    """
    folder = Path(out_dir) / METRICS_DIR
    names = {**FILES, **(FIGURES if figures else {})}
    paths = {key: folder / name for key, name in names.items()}
    if not overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise OutputExistsError(
                f"metrics already exist: {', '.join(existing)}; pass --overwrite to replace them "
                f"or choose another output folder"
            )
    with atomic_path(paths["confmat"], overwrite=overwrite) as tmp, tmp.open("wb") as handle:
        # A file handle, not a path: np.save would append ".npy" to the temporary name.
        np.save(handle, np.asarray(metrics.confmat, dtype=np.int64))
    write_text_atomic(paths["per_class"], _per_class_csv(metrics), overwrite=overwrite)
    if figures:
        cleaned = metrics.kept_confmat
        plot_confusion(cleaned, metrics.class_names, "precision", paths["confusion_precision"], overwrite)
        plot_confusion(cleaned, metrics.class_names, "recall", paths["confusion_recall"], overwrite)
        plot_iou_bars(metrics, paths["iou"], overwrite)
    figure_names = [FIGURES[key] for key in FIGURES if key in paths]
    write_text_atomic(paths["report"], _report_md(metrics, figure_names), overwrite=overwrite)
    # metrics.json last: its presence tells readers (compare, read_metrics) that the folder is complete.
    text = json.dumps(metrics_json(metrics, inference), indent=2, allow_nan=False) + "\n"
    write_text_atomic(paths["metrics"], text, overwrite=overwrite)
    return paths


def _metrics_file(path: Path) -> Path:
    path = Path(path)
    candidates = [path] if path.suffix == ".json" else [path / FILES["metrics"], path / METRICS_DIR / FILES["metrics"]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(
        f"no metrics found at {path} (looked for {', '.join(str(c) for c in candidates)}); "
        f"run `flair evaluate` for this run first, or give a run folder, its metrics/ folder or a metrics.json"
    )


def read_metrics(run_or_metrics_dir: Path) -> dict[str, Any]:
    """Read a run's ``metrics.json`` (ours or IGN's) given the run folder, its metrics/ folder or the file.

    Adds ``metrics_path`` and, when ``per_class.csv`` sits beside it, ``support`` (pixels per class).
    """
    path = _metrics_file(run_or_metrics_dir)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable metrics.json ({error}); recompute it with `flair metrics`") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a JSON object with keys {', '.join(REQUIRED_KEYS)}")
    missing = [key for key in REQUIRED_KEYS if key not in content]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}; recompute it with `flair metrics`")
    if len(content["Avg_metrics_name"]) != len(content["Avg_metrics"]) or len(content["classes"]) != len(
        content["per_class_iou"]
    ):
        raise DataError(f"{path}: names and values differ in length; the file is corrupt, recompute it")
    content["metrics_path"] = str(path)
    table = path.parent / FILES["per_class"]
    if table.is_file():
        with table.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        by_class = {row.get("class"): row.get("support_pixels") for row in rows}
        try:
            content["support"] = [int(by_class[name]) for name in content["classes"]]
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{table}: does not list the support of every class of {path.name}; "
                f"the two files disagree, recompute them with `flair metrics --overwrite`"
            ) from None
    return content
