"""``flair demo``: the whole workflow on the embedded synthetic world (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flairkit.cli.common import OverwriteOption, console, guarded
from flairkit.cli.detect import DetectionBar, print_summary


@guarded
def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the world, the run and the report.")] = Path(
        "demo_output"
    ),
    overwrite: OverwriteOption = False,
    epochs: Annotated[int | None, typer.Option(help="Override the number of training epochs.")] = None,
    multimodal: Annotated[
        bool, typer.Option("--multimodal", help="Train the U-T&T on aerial patches and Sentinel-2 (preset demo-utt).")
    ] = False,
) -> None:
    """Generate a synthetic FLAIR world, train, evaluate, detect, and write a report."""
    from flairkit.cli.metrics import metrics_view
    from flairkit.detection.summary import DetectionSummary
    from flairkit.evaluation import Metrics
    from flairkit.workflows.demo import DEMO_STEPS, DemoSettings, DemoStep, run_demo

    settings = DemoSettings(preset="demo-utt" if multimodal else "demo")
    if epochs is not None:
        settings.overrides.append(f"train.max_epochs={epochs}")
    with DetectionBar(Console(stderr=True)) as bar:

        def show(step: DemoStep) -> None:
            if not step.done:
                console.rule(f"{step.number}/{len(DEMO_STEPS)} {step.title}")
                return
            if step.note:
                console.print(step.note, markup=False, highlight=False)
            if isinstance(step.result, Metrics):
                console.print(metrics_view(step.result))
            elif isinstance(step.result, DetectionSummary):
                bar.close()
                print_summary(step.result, console)

        result = run_demo(
            out,
            settings,
            overwrite=overwrite,
            on_step=show,
            training_progress=console.is_terminal,
            detection_progress=bar if console.is_terminal else None,
        )
    console.print(f"[green]demo finished[/]: test mIoU {result.metrics.miou:.2f}; report at {result.html_report}")
