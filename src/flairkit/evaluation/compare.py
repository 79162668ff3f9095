"""Side-by-side comparison of evaluated runs, and of published figures, class by class."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from flairkit.atomic import write_text_atomic
from flairkit.config.schema import PublishedMetrics
from flairkit.errors import DataError, OutputExistsError
from flairkit.evaluation.figures import plot_grouped_bars
from flairkit.evaluation.html import REPORT_FILE, write_comparison_report
from flairkit.evaluation.protocols import AVG_METRIC_NAMES
from flairkit.evaluation.report import METRICS_DIR, read_metrics

COMPARISON_FILES = {"table": "comparison.csv", "figure": "comparison.png", "report": REPORT_FILE}


def class_key(name: str) -> str:
    """Name used to match classes across runs and publications: case, '_' and '-' are ignored."""
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


@dataclass(frozen=True)
class RunColumn:
    """The figures of one run (or one publication): a column of the comparison."""

    label: str
    source: str
    protocol: str | None
    averages: dict[str, float | None]
    """By name of :data:`AVG_METRIC_NAMES`; None where unknown."""
    per_class_iou: dict[str, float | None]
    """By class name as written in the source."""
    published: bool = False
    """Published figures (paper or model card) rather than a run of ours."""


@dataclass
class CompareResult:
    """Runs as columns; averages and per-class IoU as rows."""

    columns: list[RunColumn] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Column headers."""
        return [column.label for column in self.columns]

    @property
    def classes(self) -> list[str]:
        """Every class of every column, matched by :func:`class_key`, in order of first appearance."""
        names: dict[str, str] = {}
        for column in self.columns:
            for name in column.per_class_iou:
                names.setdefault(class_key(name), name)
        return list(names.values())

    @property
    def protocols(self) -> list[str | None]:
        """The protocol of each column (None when its metrics.json does not say)."""
        return [column.protocol for column in self.columns]

    @property
    def mixed_protocols(self) -> bool:
        """Whether known protocols differ between columns, making the averages not comparable."""
        return len({p for p in self.protocols if p is not None}) > 1

    def average_rows(self) -> list[tuple[str, list[float | None]]]:
        """(metric name, value per column) for each averaged metric."""
        return [(name, [c.averages.get(name) for c in self.columns]) for name in AVG_METRIC_NAMES]

    def iou_rows(self) -> list[tuple[str, list[float | None]]]:
        """(class name, IoU per column) for each class; None where a column lacks the class."""
        lookups = [{class_key(k): v for k, v in c.per_class_iou.items()} for c in self.columns]
        return [(name, [lookup.get(class_key(name)) for lookup in lookups]) for name in self.classes]

    def with_published(self, *published: PublishedMetrics) -> CompareResult:
        """A copy with a column per publication appended."""
        return CompareResult([*self.columns, *(published_rows(p) for p in published)])


def _run_label(metrics_path: Path) -> str:
    folder = metrics_path.parent
    return folder.parent.name if folder.name == METRICS_DIR else folder.name


def run_column(run_dir: Path) -> RunColumn:
    """The column of one run folder, its metrics/ folder or its metrics.json."""
    content = read_metrics(run_dir)
    path = Path(content["metrics_path"])
    averages = dict(zip(content["Avg_metrics_name"], content["Avg_metrics"], strict=True))
    per_class = dict(zip(content["classes"], content["per_class_iou"], strict=True))
    return RunColumn(_run_label(path), str(path), content.get("protocol"), averages, per_class)


def published_rows(published: PublishedMetrics) -> RunColumn:
    """The column of published figures (paper or model card), to set beside our runs."""
    averages: dict[str, float | None] = dict.fromkeys(AVG_METRIC_NAMES)
    averages["mIoU"] = published.miou
    averages["Overall Accuracy"] = published.overall_accuracy
    return RunColumn(
        f"published: {published.source}",
        published.source,
        published.protocol,
        averages,
        dict(published.per_class_iou),
        published=True,
    )


def _unique_labels(columns: list[RunColumn]) -> list[RunColumn]:
    seen: dict[str, int] = {}
    unique = []
    for column in columns:
        count = seen.get(column.label, 0) + 1
        seen[column.label] = count
        label = column.label if count == 1 else f"{column.label} #{count}"
        unique.append(replace(column, label=label))
    return unique


def compare_runs(
    run_dirs: Sequence[Path], published: Sequence[PublishedMetrics] = (), labels: Sequence[str] | None = None
) -> CompareResult:
    """Read each run's metrics and build the comparison (runs as columns, publications appended).

    Columns are named after the run folders (the folder holding ``metrics/``) unless ``labels`` are given.
    """
    if not run_dirs and not published:
        raise DataError("nothing to compare; give at least one run folder holding metrics/metrics.json")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels given for {len(run_dirs)} runs")
    columns = [run_column(Path(d)) for d in run_dirs]
    if labels is not None:
        columns = [replace(column, label=label) for label, column in zip(labels, columns, strict=True)]
    columns += [published_rows(p) for p in published]
    return CompareResult(_unique_labels(columns))


def _comparison_csv(result: CompareResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["metric", *result.labels])
    writer.writerow(["protocol", *(p or "" for p in result.protocols)])
    for name, values in [*result.average_rows(), *((f"IoU {n}", v) for n, v in result.iou_rows())]:
        writer.writerow([name, *("" if v is None or math.isnan(v) else f"{v:.6f}" for v in values)])
    return buffer.getvalue()


def write_comparison(result: CompareResult, out_dir: Path, overwrite: bool = False) -> dict[str, Path]:
    """Write ``comparison.csv``, a grouped per-class IoU bar chart ``comparison.png`` and ``report.html`` into
    ``out_dir``."""
    paths = {key: Path(out_dir) / name for key, name in COMPARISON_FILES.items()}
    if not overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise OutputExistsError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    write_text_atomic(paths["table"], _comparison_csv(result), overwrite=overwrite)
    iou_rows = result.iou_rows()
    groups = [name for name, _ in iou_rows] + ["mIoU"]
    miou = [c.averages.get("mIoU") for c in result.columns]
    series = {label: [values[k] for _, values in iou_rows] + [miou[k]] for k, label in enumerate(result.labels)}
    plot_grouped_bars(groups, series, paths["figure"], title="Per-class IoU by run", overwrite=overwrite)
    write_comparison_report(result, paths["report"], paths["figure"], overwrite=overwrite)
    return paths
