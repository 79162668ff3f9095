"""``flair metrics``: official metrics of existing predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flairkit.cli.common import ConfigOption, OverwriteOption, SetOption, console, guarded, resolve_config
from flairkit.cli.predict import SplitOption
from flairkit.evaluation.predict import metrics_from_predictions


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
    metrics_from_predictions(cfg, predictions, out, split=split, overwrite=overwrite, console=console)
    console.print(f"metrics written to {out / 'metrics'}")
