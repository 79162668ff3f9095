"""``flair metrics``: official metrics of existing predictions; how every command shows metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table

from flairkit.cli.common import ConfigOption, OverwriteOption, SetOption, console, guarded, resolve_config
from flairkit.cli.predict import SplitOption
from flairkit.evaluation.predict import metrics_from_predictions
from flairkit.evaluation.protocols import Metrics
from flairkit.evaluation.report import format_value, not_averaged


@guarded
def metrics_command(
    predictions: Annotated[Path, typer.Argument(help="Folder holding PRED_*.tif files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder that receives metrics/.")] = Path("."),
    config: ConfigOption = None,
    overrides: SetOption = None,
    split: SplitOption = "test",
    overwrite: OverwriteOption = False,
) -> None:
    """Compare PRED_*.tif files with the split's masks and write the metrics."""
    cfg = resolve_config(config, overrides)
    metrics = metrics_from_predictions(cfg, predictions, out, split=split, overwrite=overwrite)
    console.print(metrics_view(metrics))
    console.print(f"metrics written to {out / 'metrics'}")


def metrics_table(metrics: Metrics) -> Table:
    """A rich table of per-class metrics with the averages as footer."""
    table = Table(
        title=f"Metrics ({metrics.protocol} protocol, nomenclature {metrics.nomenclature or '?'})",
        caption=f"Overall Accuracy {format_value(metrics.overall_accuracy)} %",
        show_footer=True,
    )
    averages = [
        format_value(metrics.miou),
        format_value(metrics.fscore),
        format_value(metrics.precision),
        format_value(metrics.recall),
    ]
    table.add_column("Class", footer="average")
    for header, footer in zip(("IoU", "F-score", "Precision", "Recall"), averages, strict=True):
        table.add_column(header, footer=footer, justify="right")
    table.add_column("Support (px)", footer=f"{sum(metrics.support):,}", justify="right")
    for name, iou, fscore, precision, recall, support, used in metrics.class_rows():
        table.add_row(
            name if used else f"{name} *",
            format_value(iou),
            format_value(fscore),
            format_value(precision),
            format_value(recall),
            f"{support:,}",
            style=None if used else "dim",
        )
    return table


def metrics_view(metrics: Metrics) -> RenderableType:
    """The metrics table and, below it, which classes the averages leave out (for ``console.print``)."""
    excluded = not_averaged(metrics)
    if not excluded:
        return metrics_table(metrics)
    return Group(
        metrics_table(metrics), f"* left out of the averages by the {metrics.protocol} protocol: {', '.join(excluded)}"
    )
