"""``flair compare``: several runs' metrics side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flairkit.cli.common import OverwriteOption, console, guarded
from flairkit.config import load_config
from flairkit.evaluation.compare import compare_runs, print_comparison, write_comparison


@guarded
def compare_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run or evaluation folders holding metrics/metrics.json.")],
    published: Annotated[
        list[str] | None, typer.Option("--published", "-p", help="Add a preset's published figures (repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write comparison.csv and .png here.")] = None,
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
    print_comparison(result, console=console)
    if out is not None:
        files = write_comparison(result, out, overwrite=overwrite)
        console.print(f"written: {', '.join(str(p) for p in files.values())}")
