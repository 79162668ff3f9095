"""``flair compare``: several runs' metrics side by side."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table

from flairkit.cli.common import OverwriteOption, console, guarded
from flairkit.config import load_config
from flairkit.evaluation.compare import CompareResult, compare_runs, write_comparison
from flairkit.evaluation.report import format_value


@guarded
def compare_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run or evaluation folders holding metrics/metrics.json.")],
    published: Annotated[
        list[str] | None, typer.Option("--published", "-p", help="Add a preset's published figures (repeatable).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write comparison.csv, .png and report.html here.")
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Print (and optionally plot) per-class IoU and averages of several runs side by side."""
    papers = []
    for name in published or []:
        config = load_config(name)
        if config.published is None:
            console.print(f"[yellow]{name} has no published figures; skipped[/]")
            continue
        papers.append(config.published)
    result = compare_runs(run_dirs, published=papers)
    console.print(comparison_view(result))
    if out is not None:
        files = write_comparison(result, out, overwrite=overwrite)
        console.print(f"written: {', '.join(str(p) for p in files.values())}")


def _best(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and not math.isnan(v)]
    return max(known) if len(known) > 1 else None


def comparison_table(result: CompareResult) -> Table:
    """A rich table: averages then per-class IoU, one column per run, the best value of each row in bold."""
    table = Table(title="Comparison (values in %)")
    table.add_column("metric")
    for label in result.labels:
        table.add_column(label, justify="right")
    table.add_row("protocol", *(p or "?" for p in result.protocols), end_section=True)
    rows = result.average_rows()
    for index, (name, values) in enumerate([*rows, *((f"IoU {n}", v) for n, v in result.iou_rows())]):
        best = _best(values)
        cells = [f"[bold]{format_value(v)}[/]" if v is not None and v == best else format_value(v) for v in values]
        table.add_row(name, *cells, end_section=index == len(rows) - 1)
    return table


def comparison_view(result: CompareResult) -> RenderableType:
    """The comparison table, with a warning below it when protocols differ (for ``console.print``)."""
    if not result.mixed_protocols:
        return comparison_table(result)
    protocols = ", ".join(sorted({p for p in result.protocols if p}))
    return Group(
        comparison_table(result),
        f"[yellow]warning:[/] columns use different protocols ({protocols}); averages are not comparable",
    )
