"""``flair evaluate``: predict a split and compute the official metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flairkit.cli.common import ConfigOption, OverwriteOption, SetOption, console, guarded
from flairkit.cli.predict import CheckpointOption, ProgressOption, SplitOption, checkpoint_source, config_for_weights
from flairkit.evaluation.predict import evaluate


@guarded
def evaluate_command(
    out: Annotated[Path, typer.Argument(help="Folder for predictions/ and metrics/.")],
    config: ConfigOption = None,
    overrides: SetOption = None,
    checkpoint: CheckpointOption = None,
    split: SplitOption = "test",
    overwrite: OverwriteOption = False,
    progress: ProgressOption = True,
) -> None:
    """Predict a split and write metrics/confmat.npy, metrics.json, per-class CSV, report and figures."""
    from flairkit.models.checkpoints import load_model

    cfg = config_for_weights(config, overrides, checkpoint)
    model = load_model(cfg, checkpoint_source(checkpoint, cfg.evaluate.checkpoint))
    evaluate(cfg, model, out, split=split, overwrite=overwrite, progress=progress, console=console)
    console.print(f"metrics written to {Path(out) / 'metrics'}")
