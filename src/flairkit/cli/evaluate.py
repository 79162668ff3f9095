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
    checkpoint_sources,
    config_file,
    config_for_weights,
    device_overrides,
    network_for_prediction,
    prediction_progress,
)
from flairkit.config import FlairConfig
from flairkit.errors import ConfigError
from flairkit.evaluation.html import REPORT_FILE
from flairkit.evaluation.predict import evaluate, evaluate_hub
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
    """Predict a split and write metrics/confmat.npy, metrics.json, per-class CSV, figures and report.html
    (FLAIR-HUB's multimodal network, model.hub: <TASK>/metrics/ per task, no report)."""
    all_overrides = [*(overrides or []), *device_overrides("evaluate", device, precision, tta)]
    cfg = config_for_weights(config, all_overrides, checkpoint[0] if checkpoint else None)
    if cfg.model.hub is not None:
        weights = checkpoint_sources(checkpoint, cfg.evaluate.checkpoint)
        _evaluate_hub(cfg, weights, out, split, overwrite, progress, config_file(config))
        return
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


def _evaluate_hub(
    cfg: FlairConfig, weights: list[str], out: Path, split: str, overwrite: bool, progress: bool, inputs: list[Path]
) -> None:
    """``flair evaluate`` of FLAIR-HUB's multimodal network: its weights loaded strictly, metrics per task."""
    from flairkit.models.build import build_model
    from flairkit.models.hub import load_hub_weights

    if len(weights) > 1:
        raise ConfigError("model.hub: flair evaluate scores one FLAIR-HUB network at a time; give one --checkpoint")
    model = build_model(cfg, pretrained_encoder=False)
    load_hub_weights(model, weights[0])
    with prediction_progress(progress) as on_progress:
        results = evaluate_hub(
            cfg, model, out, split=split, overwrite=overwrite, progress=on_progress, weights=weights, inputs=inputs
        )
    for folder, metrics in results.items():
        console.print(f"[bold]{folder}[/]", markup=True, highlight=False)
        console.print(metrics_view(metrics))
        console.print(f"metrics written to {Path(out) / folder / 'metrics'}")
