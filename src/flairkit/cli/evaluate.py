"""``flair evaluate``: predict a split and compute the official metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flairkit.cli.common import ConfigOption, OverwriteOption, SetOption, console, guarded
from flairkit.cli.metrics import metrics_view
from flairkit.cli.predict import (
    CheckpointOption,
    DeviceOption,
    PrecisionOption,
    ProgressOption,
    SplitOption,
    TtaOption,
    config_file,
    network_for_prediction,
    prediction_progress,
)
from flairkit.evaluation.html import REPORT_FILE
from flairkit.evaluation.predict import evaluate
from flairkit.models.inference import forward_passes


@guarded
def evaluate_command(
    out: Annotated[Path, typer.Argument(help="Folder for predictions/ and metrics/.")],
    config: ConfigOption = None,
    overrides: SetOption = None,
    checkpoint: CheckpointOption = None,
    split: SplitOption = "test",
    overwrite: OverwriteOption = False,
    progress: ProgressOption = True,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    tta: TtaOption = None,
) -> None:
    """Predict a split and write metrics/confmat.npy, metrics.json, per-class CSV, figures and report.html."""
    cfg, weights, model = network_for_prediction(config, overrides, checkpoint, device, precision, tta)
    with prediction_progress(progress) as on_progress:
        metrics = evaluate(
            cfg,
            model,
            out,
            split=split,
            overwrite=overwrite,
            progress=on_progress,
            weights=weights,
            inputs=config_file(config),
        )
    console.print(metrics_view(metrics))
    console.print(
        f"metrics written to {Path(out) / 'metrics'} ({forward_passes(cfg.evaluate.tta, len(model))} per patch)"
    )
    console.print(f"report: {Path(out) / REPORT_FILE}")
