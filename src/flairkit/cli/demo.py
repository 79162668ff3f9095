"""``flair demo``: the whole workflow on the embedded synthetic world (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flairkit.cli.common import OverwriteOption, console, guarded


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
    from flairkit.demo import DemoSettings, run_demo

    settings = DemoSettings(preset="demo-utt" if multimodal else "demo")
    if epochs is not None:
        settings.overrides.append(f"train.max_epochs={epochs}")
    run_demo(out, settings, overwrite=overwrite, console=console)
