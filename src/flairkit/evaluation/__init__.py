"""Evaluation: confusion matrices, FLAIR metric protocols, reports, figures and run comparison."""

from flairkit.evaluation.compare import (
    CompareResult,
    RunColumn,
    compare_runs,
    published_rows,
    write_comparison,
)
from flairkit.evaluation.confusion import ConfusionAccumulator, confusion_matrix
from flairkit.evaluation.pairs import confusion_from_files, pair_predictions
from flairkit.evaluation.protocols import AVG_METRIC_NAMES, PROTOCOLS, Metrics, compute_metrics, resolve_protocol
from flairkit.evaluation.report import read_metrics, write_metrics

__all__ = [
    "AVG_METRIC_NAMES",
    "PROTOCOLS",
    "CompareResult",
    "ConfusionAccumulator",
    "Metrics",
    "RunColumn",
    "compare_runs",
    "compute_metrics",
    "confusion_from_files",
    "confusion_matrix",
    "pair_predictions",
    "published_rows",
    "read_metrics",
    "resolve_protocol",
    "write_comparison",
    "write_metrics",
]
